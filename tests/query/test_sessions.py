"""Session ids are random and opaque; only their keyed hashes are stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import pytest

from rag_core.errors import RagCoreError
from rag_core.query.sessions import (
    MIN_KEY_BYTES,
    InvalidSessionIdError,
    SessionKeyTooShortError,
    hash_session_id,
    is_well_formed_session_id,
    new_session_id,
    session_id_matches,
)

KEY = secrets.token_bytes(32)
OTHER_KEY = secrets.token_bytes(32)


def test_ids_are_distinct_url_safe_and_long() -> None:
    ids = [new_session_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for session_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
        assert is_well_formed_session_id(session_id)


def test_hash_is_stable_for_the_same_key() -> None:
    session_id = new_session_id()
    first = hash_session_id(session_id, KEY)
    assert hash_session_id(session_id, KEY) == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    # it is plain HMAC-SHA256, so any component holding the key can verify it
    assert first == hmac.new(KEY, session_id.encode(), hashlib.sha256).hexdigest()


def test_hash_differs_between_keys_and_ids() -> None:
    session_id = new_session_id()
    assert hash_session_id(session_id, KEY) != hash_session_id(session_id, OTHER_KEY)
    assert hash_session_id(session_id, KEY) != hash_session_id(new_session_id(), KEY)


def test_raw_id_never_equals_or_appears_in_the_hash() -> None:
    for _ in range(500):
        session_id = new_session_id()
        digest = hash_session_id(session_id, KEY)
        assert digest != session_id
        assert session_id not in digest
        assert session_id[:16] not in digest  # not even a recognisable prefix


def test_short_key_raises_named_error_without_the_key() -> None:
    short = b"k" * (MIN_KEY_BYTES - 1)
    with pytest.raises(SessionKeyTooShortError) as caught:
        hash_session_id(new_session_id(), short)
    err = caught.value
    assert isinstance(err, RagCoreError) and isinstance(err, ValueError)
    assert (err.length, err.minimum) == (31, 32)
    assert "kkkk" not in str(err)
    with pytest.raises(SessionKeyTooShortError):
        hash_session_id(new_session_id(), b"")
    assert len(hash_session_id(new_session_id(), b"k" * MIN_KEY_BYTES)) == 64


def test_key_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        hash_session_id(new_session_id(), "a" * 64)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "short", "x" * 42, "a" * 43 + "!", "a" * 257,
                                 "a" * 43 + "\n", None, 12345, b"a" * 43])
def test_malformed_ids_are_refused_without_echoing_them(bad: object) -> None:
    with pytest.raises(InvalidSessionIdError) as caught:
        hash_session_id(bad, KEY)  # type: ignore[arg-type]
    if isinstance(bad, str) and len(bad) >= 5:
        assert bad not in str(caught.value)
    assert not is_well_formed_session_id(bad)


def test_matches_in_constant_time_helper() -> None:
    session_id = new_session_id()
    stored = hash_session_id(session_id, KEY)
    assert session_id_matches(session_id, stored, KEY)
    assert not session_id_matches(session_id, stored, OTHER_KEY)
    assert not session_id_matches(new_session_id(), stored, KEY)
    assert not session_id_matches("garbage", stored, KEY)
