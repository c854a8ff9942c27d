"""API keys resolved to tenants, kept in memory ``ttl_s``: what the HTTP service calls on
every request, so a key seen within ``ttl_s`` costs no database round trip.

Both answers are kept: a live key's tenant, and "no tenant" for a well-formed key that is
unknown, revoked or has a wrong secret (a client retrying with a bad key would otherwise
cost a query per request). Revoking a key therefore takes effect in a process within
``ttl_s`` (``RAG_API__API_KEY_CACHE_TTL_S``, 5 s by default). A refusal kept is never
wrong later: keys are random (nobody presents one before it is issued) and a revoked key
stays revoked.

Entries are keyed by the key's sha256, never the key, so the process's memory holds no
usable key. The two answers are kept apart, each bounded to ``max_entries`` (least recently
used go first): a flood of made-up keys can evict only other made-up keys, never a live
one. A string that is not a key (:func:`~rag_core.db.api_key_format.parse_key`) is refused
without a lookup and not kept. A lookup that raises (the database is away) is not kept
either: the next request asks again.

Thread-safe: one lock around the maps, never held during a lookup. Two threads missing on
one key at once may both look it up; both get the same answer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from rag_core.common.tenancy import TenantId
from rag_core.db.api_key_format import parse_key

#: Keys kept at most per answer (live, refused) unless told otherwise.
DEFAULT_MAX_ENTRIES = 10_000


class KeySource(Protocol):
    """What resolves a key in the database (:class:`rag_core.db.api_keys.ApiKeys`)."""

    def resolve(self, key: str) -> TenantId | None: ...


class _Kept:
    """One bounded map of key hash -> (expiry, answer), least recently used first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, TenantId | None]] = OrderedDict()

    def get(self, digest: str, now: float) -> tuple[bool, TenantId | None]:
        kept = self.entries.get(digest)
        if kept is None:
            return False, None
        if now >= kept[0]:
            del self.entries[digest]
            return False, None
        self.entries.move_to_end(digest)
        return True, kept[1]

    def put(self, digest: str, expires: float, answer: TenantId | None) -> None:
        self.entries[digest] = (expires, answer)
        self.entries.move_to_end(digest)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class CachedKeyResolver:
    """``resolve(key)`` like ``source.resolve``, answered from memory within ``ttl_s``
    (0: every call asks ``source``)."""

    def __init__(self, source: KeySource, *, ttl_s: float,
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._live = _Kept(max_entries)
        self._refused = _Kept(max_entries)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def kept(self, key: str) -> tuple[bool, TenantId | None]:
        """What :meth:`resolve` would answer from memory alone: ``(True, tenant or None)``
        for a kept answer and for a string that is not a key (refused without a lookup),
        ``(False, None)`` when only the database can tell. No I/O, so an event loop may
        call it and hand only the misses to a thread."""
        parsed = parse_key(key)
        if parsed is None:
            return True, None
        return self._kept(parsed.key_hash)

    def _kept(self, digest: str) -> tuple[bool, TenantId | None]:
        if self._ttl_s <= 0:
            return False, None
        now = self._clock()
        with self._lock:
            for kept in (self._live, self._refused):
                found, answer = kept.get(digest, now)
                if found:
                    return True, answer
        return False, None

    def resolve(self, key: str) -> TenantId | None:
        """The tenant of ``key`` if it is a live key (as of at most ``ttl_s`` ago), else
        None. Database errors propagate and are not kept."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        digest = parsed.key_hash
        found, answer = self._kept(digest)
        if found:
            return answer
        tenant = self._source.resolve(key)
        if self._ttl_s > 0:
            expires = self._clock() + self._ttl_s
            with self._lock:
                # A key changes answer only when revoked (live -> refused): drop the other.
                (self._refused if tenant is not None else self._live).entries.pop(digest, None)
                (self._live if tenant is not None else self._refused).put(digest, expires,
                                                                          tenant)
        return tenant

    def __len__(self) -> int:
        """How many answers are kept (expired ones until they are next looked at)."""
        with self._lock:
            return len(self._live.entries) + len(self._refused.entries)
