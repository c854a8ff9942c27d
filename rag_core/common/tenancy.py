"""Tenant identifiers.

A ``TenantId`` is ``tn_`` followed by exactly 32 lowercase hex characters (a UUID's hex
without dashes). Anything else is rejected here, before any SQL runs: the database policies
are the second line of defence, not the first.
"""

from __future__ import annotations

import re
import secrets
from typing import NewType

from rag_core.errors import InvalidTenantIdError

TenantId = NewType("TenantId", str)

#: The one spelling of a tenant id. Python checks it with ``fullmatch`` (``$`` would also
#: match before a trailing newline and admit "tn_...\n").
TENANT_ID_BODY = r"tn_[0-9a-f]{32}"
#: For validators that search with an anchored pattern: pydantic's ``Field(pattern=...)``
#: (Rust regex, where ``$`` is the end of input) and Great Expectations.
TENANT_ID_REGEX = rf"^{TENANT_ID_BODY}$"
_TENANT_ID_PATTERN = re.compile(TENANT_ID_BODY)


def parse_tenant_id(value: object) -> TenantId:
    """Return ``value`` as a ``TenantId`` or raise ``InvalidTenantIdError`` naming it."""
    if not isinstance(value, str) or _TENANT_ID_PATTERN.fullmatch(value) is None:
        raise InvalidTenantIdError(value)
    return TenantId(value)


def is_valid_tenant_id(value: object) -> bool:
    """True when ``value`` is a well-formed tenant id."""
    return isinstance(value, str) and _TENANT_ID_PATTERN.fullmatch(value) is not None


def new_tenant_id() -> TenantId:
    """A fresh random tenant id (128 bits from the OS CSPRNG)."""
    return TenantId("tn_" + secrets.token_hex(16))
