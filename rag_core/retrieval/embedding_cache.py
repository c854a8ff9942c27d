"""The query-embedding cache: query vectors in Redis per tenant and exact model.

Key: tenant + model id + model version + sha256(normalised text). It is tenant-scoped
although embeddings do not depend on the tenant: a shared entry would let one tenant learn
by timing whether another asked the same question. A Redis error goes to the outage policy
(control ``embedding_cache``): failing open, it is a miss (reads) or ignored (writes).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import redis

from rag_core.common.hashing import digest, normalize_question
from rag_core.common.metrics import CACHE_LOOKUPS
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.common.tenancy import TenantId, parse_tenant_id


class QueryEmbeddingCache:
    """Query vectors per tenant and exact model, as raw float32 bytes."""

    def __init__(self, client: redis.Redis, model_id: str, model_version: str,
                 ttl_s: int = 7 * 24 * 3600, prefix: str = "rag",
                 outages: Outages = DEFAULT_OUTAGES) -> None:
        self._client = client
        self._model = digest(model_id, model_version)[:16]
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._outages = outages

    def _key(self, tenant: TenantId, text: str) -> str:
        return f"{self.prefix}:{tenant}:qemb:{self._model}:{digest(normalize_question(text))}"

    def get(self, tenant_id: TenantId | str, text: str) -> npt.NDArray[np.float32] | None:
        tenant = parse_tenant_id(tenant_id)
        try:
            raw = self._client.get(self._key(tenant, text))
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.EMBEDDING_CACHE, "get", exc)
            return None
        CACHE_LOOKUPS.labels("query_embedding", "hit" if raw is not None else "miss").inc()
        if not isinstance(raw, bytes):
            return None  # a client with decode_responses=True cannot hold vectors
        return np.frombuffer(raw, dtype=np.float32).copy()

    def put(self, tenant_id: TenantId | str, text: str,
            vector: npt.NDArray[np.float32]) -> None:
        tenant = parse_tenant_id(tenant_id)
        try:
            self._client.set(self._key(tenant, text),
                             np.asarray(vector, dtype=np.float32).tobytes(), ex=self.ttl_s)
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.EMBEDDING_CACHE, "put", exc)
