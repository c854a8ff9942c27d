"""Re-embedding a tenant's stored chunks under a new model key, beside the old vectors.

Changing the embedding model (or its version: int8 instead of fp32, new weights) is a
versioned rollout, not a big-bang re-index: the new version's vectors are written under
their own key (``rag.chunk_embeddings`` holds one row per chunk and key, each key with its
own partial HNSW index), a feature flag routes the canary cohort's retrieval to the key, and
the old key keeps serving everyone else, so rolling back changes nothing stored. Nothing is
chunked again and no document is rewritten: the chunks are the ones the old vectors embed.

Resumable and idempotent: each batch is read, embedded and inserted in one tenant
transaction and only chunks without a vector under the key are read, so a run interrupted
anywhere keeps what it committed and a rerun embeds only what is missing (a rerun after
new documents were ingested under the old key catches the key up). Chunks are claimed with
``FOR NO KEY UPDATE SKIP LOCKED``: two runs on one tenant share the work instead of
embedding it twice, and ingestion's foreign-key checks are not blocked.

A key names one exact version: registration records the embedder's ``model_id@version``
and refuses another (:func:`~rag_core.ingestion.model_keys.ensure_registered`); before
adding to a key that already holds vectors, a sample of them is embedded again and must
match, which also covers keys registered by a migration with a bare model id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, Field

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import EmbeddingKeyRefusedError
from rag_core.ingestion.model_keys import (
    AdminConnector,
    coverage,
    embedder_label,
    ensure_registered,
)
from rag_core.retrieval.vector_store import VectorStore

__all__ = ["ReembedPolicy", "ReembedReport", "Reembedding"]

ProgressCallback = Callable[[int, int], None]  # (embedded so far, missing at the start)

_MISSING = """
SELECT c.chunk_id, c.text
  FROM rag.chunks c
 WHERE c.tenant_id = %s AND c.chunk_id > %s
   AND NOT EXISTS (SELECT 1 FROM rag.chunk_embeddings e
                    WHERE e.chunk_id = c.chunk_id AND e.tenant_id = c.tenant_id
                      AND e.model_key = %s)
 ORDER BY c.chunk_id
 LIMIT %s
   FOR NO KEY UPDATE OF c SKIP LOCKED
"""
_SAMPLE = """
SELECT c.text, e.embedding
  FROM rag.chunks c JOIN rag.chunk_embeddings e
    ON e.chunk_id = c.chunk_id AND e.tenant_id = c.tenant_id
 WHERE c.tenant_id = %s AND e.model_key = %s
 ORDER BY c.chunk_id
 LIMIT %s
"""
# The tenant's cached answers carry its corpus version: answers computed from the key's
# vectors before they were complete must not be served after.
_BUMP_CORPUS = ("UPDATE rag.tenants SET corpus_version = corpus_version + 1 "
                "WHERE tenant_id = %s")


class ReembedPolicy(BaseModel, frozen=True):
    """How a re-embedding runs."""

    batch_chunks: int = Field(default=64, ge=1, le=10_000,
                              description="chunks read, embedded and written per transaction")
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    sample_chunks: int = Field(default=3, ge=0, le=100,
                               description="stored vectors embedded again to check that the "
                                           "key holds this embedder's version")
    same_version_min_cosine: float = Field(default=0.9999, gt=0, le=1)
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)


@dataclass(frozen=True)
class ReembedReport:
    """What one tenant's re-embedding did (``missing``: chunks still without a vector, e.g.
    held by a concurrent run or ingested meanwhile; a rerun embeds them)."""

    tenant_id: TenantId
    model_key: str
    model: str
    dimension: int
    registered: bool
    chunks: int
    already_present: int
    embedded: int
    missing: int
    batches: int
    elapsed_s: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Reembedding:
    """Writes ``embedder``'s vectors of a tenant's chunks under ``store.model_key``."""

    def __init__(self, db: Database, admin: AdminConnector, store: VectorStore,
                 embedder: Embedder, policy: ReembedPolicy | None = None) -> None:
        self._db = db
        self._admin = admin
        self._store = store
        self._embedder = embedder
        self.policy = policy or ReembedPolicy()

    @property
    def model_key(self) -> str:
        return self._store.model_key

    def run(self, tenant_id: TenantId | str,
            progress: ProgressCallback | None = None) -> ReembedReport:
        """Embed the tenant's chunks that have no vector under the key yet (registering the
        key first if needed); returns the counts."""
        tenant = parse_tenant_id(tenant_id)
        started = time.perf_counter()
        policy = self.policy
        registered = ensure_registered(self._db, self._admin, self.model_key, self._embedder,
                                       m=policy.hnsw_m,
                                       ef_construction=policy.hnsw_ef_construction)
        before = coverage(self._db, tenant, self.model_key)
        if before.with_vectors:
            self._check_same_version(tenant)
        embedded = batches = 0
        last_id = 0
        while True:
            with self._db.tenant_session(tenant) as conn:
                rows = conn.execute(_MISSING, [tenant, last_id, self.model_key,
                                               policy.batch_chunks]).fetchall()
                if not rows:
                    break
                ids = [int(r[0]) for r in rows]
                vectors = self._embedder.embed_passages([str(r[1]) for r in rows],
                                                        batch_size=policy.embed_batch_size)
                self._store.insert_embeddings(conn, tenant, ids, list(vectors))
            embedded += len(ids)
            batches += 1
            last_id = ids[-1]
            if progress is not None:
                progress(embedded, before.missing)
        if embedded:
            with self._db.tenant_session(tenant) as conn:
                conn.execute(_BUMP_CORPUS, [tenant])
        after = coverage(self._db, tenant, self.model_key)
        return ReembedReport(
            tenant_id=tenant, model_key=self.model_key, model=embedder_label(self._embedder),
            dimension=self._embedder.dimension, registered=registered, chunks=after.chunks,
            already_present=before.with_vectors, embedded=embedded, missing=after.missing,
            batches=batches, elapsed_s=round(time.perf_counter() - started, 3))

    def _check_same_version(self, tenant: TenantId) -> None:
        """Refuse to add this embedder's vectors to a key whose stored ones it does not
        reproduce (another version under the same key)."""
        if not self.policy.sample_chunks:
            return
        with self._db.tenant_session(tenant) as conn:
            rows = conn.execute(_SAMPLE, [tenant, self.model_key,
                                          self.policy.sample_chunks]).fetchall()
        if not rows:
            return
        again = self._embedder.embed_passages([str(r[0]) for r in rows])
        stored = np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows])
        if stored.shape != again.shape:
            raise EmbeddingKeyRefusedError(self.model_key, "re-embedding", "its stored "
                                           f"vectors have dimension {stored.shape[1]}")
        cosines = np.sum(stored * again, axis=1) / (
            np.linalg.norm(stored, axis=1) * np.linalg.norm(again, axis=1))
        lowest = float(np.min(cosines))
        if lowest < self.policy.same_version_min_cosine:
            raise EmbeddingKeyRefusedError(
                self.model_key, "re-embedding", f"its stored vectors are not this embedder's "
                f"({embedder_label(self._embedder)}): cosine {lowest:.4f} < "
                f"{self.policy.same_version_min_cosine} on a sample of {len(rows)}; use a "
                "new key for a new version")
