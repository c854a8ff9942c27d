"""Stable digests for cache keys (shared by the answer and query-embedding caches)."""

from __future__ import annotations

import hashlib
import json
import unicodedata


def normalize_question(text: str) -> str:
    """Case-folded, NFKC, whitespace-collapsed: trivially different spellings share a key."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def digest(*parts: object) -> str:
    """sha256 (hex) of the JSON form of ``parts``: equal inputs give equal keys everywhere."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
