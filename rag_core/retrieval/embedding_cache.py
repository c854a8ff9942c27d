"""The query-embedding cache: query vectors in Redis per tenant and exact model.

Key: tenant + the tenant's cache epoch + model id + model version + sha256(normalised text).
It is tenant-scoped although embeddings do not depend on the tenant: a shared entry would let
one tenant learn by timing whether another asked the same question. The epoch
(:mod:`rag_core.db.cache_epochs`) keeps a tenant id created again from reading the old
tenant's entries; without one the cache is neither read nor written.

A cached vector is checked before use (raw bytes of exactly ``dimension`` finite float32
values): anything else is a miss, is deleted and is counted (outcome ``invalid``), so a
vector of another model or a damaged value never reaches the search. A Redis error goes to
the outage policy (control ``embedding_cache``): failing open, it is a miss (reads) or
ignored (writes).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import redis

from rag_core.common.hashing import digest, normalize_question
from rag_core.common.metrics import CACHE_LOOKUPS
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.cache_epochs import EpochSource

_log = logging.getLogger(__name__)
_FLOAT32_BYTES = 4


class QueryEmbeddingCache:
    """Query vectors per tenant and exact model, as raw float32 bytes."""

    def __init__(self, client: redis.Redis, model_id: str, model_version: str, *,
                 dimension: int, epochs: EpochSource, ttl_s: int = 7 * 24 * 3600,
                 prefix: str = "rag", outages: Outages = DEFAULT_OUTAGES) -> None:
        self._client = client
        self._model = digest(model_id, model_version)[:16]
        self.dimension = dimension
        self._epochs = epochs
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._outages = outages

    def _key(self, tenant: TenantId, epoch: str, text: str) -> str:
        return (f"{self.prefix}:{tenant}:qemb:e{epoch}:{self._model}:"
                f"{digest(normalize_question(text))}")

    def get(self, tenant_id: TenantId | str, text: str) -> npt.NDArray[np.float32] | None:
        tenant = parse_tenant_id(tenant_id)
        epoch = self._epochs(tenant)
        if epoch is None:
            CACHE_LOOKUPS.labels("query_embedding", "no_epoch").inc()
            return None
        name = self._key(tenant, epoch, text)
        try:
            raw = self._client.get(name)
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.EMBEDDING_CACHE, "get", exc)
            return None
        if raw is None:
            CACHE_LOOKUPS.labels("query_embedding", "miss").inc()
            return None
        vector = self._decode(raw)
        if vector is None:
            self._discard(name)
            return None
        CACHE_LOOKUPS.labels("query_embedding", "hit").inc()
        return vector

    def put(self, tenant_id: TenantId | str, text: str,
            vector: npt.NDArray[np.float32]) -> None:
        tenant = parse_tenant_id(tenant_id)
        values = np.asarray(vector, dtype=np.float32)
        if values.shape != (self.dimension,) or not np.isfinite(values).all():
            _log.warning("query vector of shape %s not cached (expected (%d,), finite)",
                         values.shape, self.dimension)
            return
        epoch = self._epochs(tenant)
        if epoch is None:
            return
        try:
            self._client.set(self._key(tenant, epoch, text), values.tobytes(), ex=self.ttl_s)
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.EMBEDDING_CACHE, "put", exc)

    def _decode(self, raw: object) -> npt.NDArray[np.float32] | None:
        # A client with decode_responses=True hands back str: it cannot hold vectors.
        if not isinstance(raw, bytes) or len(raw) != self.dimension * _FLOAT32_BYTES:
            return None
        vector = np.frombuffer(raw, dtype=np.float32).copy()
        return vector if np.isfinite(vector).all() else None

    def _discard(self, name: str) -> None:
        CACHE_LOOKUPS.labels("query_embedding", "invalid").inc()
        _log.warning("cached query vector %s is invalid: deleted, treated as a miss", name)
        try:
            self._client.delete(name)
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.EMBEDDING_CACHE, "delete", exc)
