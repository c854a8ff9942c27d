"""Session identifiers: random and opaque on the wire, stored only as keyed hashes.

A session id is ``secrets.token_urlsafe(32)`` (256 bits from the OS CSPRNG, 43 URL-safe
characters). The server never stores it: it stores ``hash_session_id(id, key)``, the
HMAC-SHA256 of the id under a server-side key (hex), so a leaked sessions table or log line
cannot be replayed as a cookie, and without the key the hashes cannot even be checked against
guessed ids. The key comes from configuration and is passed in by the caller; it must be at
least 32 bytes (the HMAC-SHA256 block-size guidance for full-strength keys).

Errors about the key carry its *length*, never its bytes, and errors about a session id carry
its type and length, never the id: both are secrets and error messages end up in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from rag_core.errors import InvalidSessionIdError, SessionKeyTooShortError

__all__ = [
    "MIN_KEY_BYTES",
    "hash_session_id",
    "is_well_formed_session_id",
    "new_session_id",
    "session_id_matches",
]

MIN_KEY_BYTES = 32
_SESSION_ID_BYTES = 32
# token_urlsafe(32) gives 43 characters; accept up to 256 so the format can grow.
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{43,256}\Z")


def new_session_id() -> str:
    """A fresh random session id (256 bits, URL-safe, opaque)."""
    return secrets.token_urlsafe(_SESSION_ID_BYTES)


def is_well_formed_session_id(value: object) -> bool:
    """True when ``value`` has the shape of an id from ``new_session_id``."""
    return isinstance(value, str) and _SESSION_ID_RE.match(value) is not None


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"session hashing key must be bytes, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise SessionKeyTooShortError(len(key), MIN_KEY_BYTES)
    return bytes(key)


def hash_session_id(session_id: str, key: bytes) -> str:
    """HMAC-SHA256 of ``session_id`` under ``key``, as 64 lowercase hex characters.

    Raises ``SessionKeyTooShortError`` for a key under 32 bytes and ``InvalidSessionIdError``
    for anything that is not a well-formed session id (checked before any hashing, so a
    forged cookie costs nothing downstream).
    """
    checked_key = _check_key(key)
    if not is_well_formed_session_id(session_id):
        raise InvalidSessionIdError(session_id)
    return hmac.new(checked_key, session_id.encode("ascii"), hashlib.sha256).hexdigest()


def session_id_matches(session_id: str, stored_hash: str, key: bytes) -> bool:
    """Constant-time check of a presented id against a stored hash (False if malformed)."""
    checked_key = _check_key(key)
    if not is_well_formed_session_id(session_id):
        return False
    candidate = hmac.new(checked_key, session_id.encode("ascii"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(candidate, stored_hash)
