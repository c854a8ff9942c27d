"""The one spelling of an API key: ``rag_<key_id>_<secret>``, made and parsed here only.

``key_id`` is 12 lowercase hex characters: a public name for the key (listed, safe in
logs) that finds its row. ``secret`` is ``secrets.token_urlsafe(32)``: 256 bits from the OS
CSPRNG in 43 base64url characters. What is stored is the sha256 of the whole key (migration
0010 says why a fast hash is right for 256 random bits), so the plaintext exists only in
the answer to the command that issued it.

Parsing is strict: the exact format, no surrounding whitespace, nothing else. A string that
is not a key never reaches the database.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "rag_"
KEY_ID_BYTES = 6      # 12 hex characters
SECRET_BYTES = 32     # 43 base64url characters
# The secret's last character carries the last 4 of the 256 bits and 2 zero padding bits,
# so only every fourth base64url letter can end it: anything else was not made here.
_KEY_PATTERN = re.compile(r"rag_([0-9a-f]{12})_([A-Za-z0-9_-]{42}[AEIMQUYcgkosw048])")


@dataclass(frozen=True)
class ParsedKey:
    """A string that has the shape of a key (whether it is one, only the database knows)."""

    key_id: str
    key_hash: str  # sha256 hex of the whole key, as stored


def key_hash(key: str) -> str:
    """The sha256 hex of the whole key: what ``rag.api_keys.key_hash`` holds."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key(key: object) -> ParsedKey | None:
    """``key`` split into its id and hash, or None when it is not a key."""
    if not isinstance(key, str):
        return None
    match = _KEY_PATTERN.fullmatch(key)
    if match is None:
        return None
    return ParsedKey(match.group(1), key_hash(key))


def generate_key() -> tuple[str, ParsedKey]:
    """A fresh key and its parts: the key is for the caller to hand out once."""
    key = f"{KEY_PREFIX}{secrets.token_hex(KEY_ID_BYTES)}_{secrets.token_urlsafe(SECRET_BYTES)}"
    parsed = parse_key(key)
    assert parsed is not None  # made in the one format parse_key accepts
    return key, parsed
