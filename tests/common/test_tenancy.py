"""Tenant id validation happens before any SQL: exact format, named error, offending value."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rag_core.common.tenancy import is_valid_tenant_id, new_tenant_id, parse_tenant_id
from rag_core.errors import InvalidTenantIdError, TenantError

REFERENCE = re.compile(r"tn_[0-9a-f]{32}")


def test_accepts_well_formed_id() -> None:
    value = "tn_" + "0123456789abcdef" * 2
    assert parse_tenant_id(value) == value


@pytest.mark.parametrize("value", [
    "", "tn_", "TN_" + "a" * 32, "tn_" + "A" * 32, "tn_" + "a" * 31, "tn_" + "a" * 33,
    "tn_" + "g" * 32, "tn_" + "a" * 32 + "\n", "\ntn_" + "a" * 32, " tn_" + "a" * 32,
    "tn_" + "a" * 31 + "'", "tn_' OR '1'='1", "'; DROP TABLE rag.chunks; --",
    "tn_" + "\uff10" * 32, "tn-" + "a" * 32, None, 42, b"tn_" + b"a" * 32,
])
def test_rejects_malformed_ids_with_named_error(value: object) -> None:
    with pytest.raises(InvalidTenantIdError) as info:
        parse_tenant_id(value)
    assert info.value.value == value
    assert isinstance(info.value, TenantError)
    assert repr(value)[:20] in str(info.value) or value is None or isinstance(value, int)


@given(st.text(max_size=64))
def test_random_strings_accepted_iff_reference_regex_matches(value: str) -> None:
    expected = REFERENCE.fullmatch(value) is not None
    assert is_valid_tenant_id(value) is expected
    if expected:
        assert parse_tenant_id(value) == value
    else:
        with pytest.raises(InvalidTenantIdError):
            parse_tenant_id(value)


@given(st.from_regex(r"tn_[0-9a-f]{32}", fullmatch=True))
def test_generated_valid_ids_round_trip(value: str) -> None:
    assert parse_tenant_id(value) == value


def test_new_tenant_ids_are_valid_and_distinct() -> None:
    ids = {new_tenant_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_tenant_id(i) for i in ids)
