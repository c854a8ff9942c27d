"""A thin, tenant-scoped vector store over ``rag.chunks`` / ``rag.chunk_embeddings``.

Reads go through three independent guards: the tenant session (RLS on ``app.tenant_id``),
the explicit tenant filter inside ``rag.search_chunks``, and the per-row check below. A
row of another tenant is never returned: it raises ``CrossTenantLeakError`` and is counted
in ``rag_cross_tenant_rows_blocked``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector import Vector
from psycopg.types.json import Jsonb

from rag_core.common.metrics import CROSS_TENANT_ROWS_BLOCKED
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import Settings
from rag_core.db.pool import Connection, Database
from rag_core.errors import (
    CrossTenantLeakError,
    DimensionMismatchError,
    UnknownEmbeddingModelError,
)

_SEARCH = """
SELECT chunk_id, document_id, tenant_id, ordinal, text, distance, plan
  FROM rag.search_chunks(%(tenant)s, %(model)s, %(query)s, %(k)s, %(ef)s, %(exact_max)s,
                         %(iterative)s, %(max_tuples)s)
"""

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_chunk_embeddings (
    chunk_id bigint NOT NULL, embedding vector NOT NULL) ON COMMIT DELETE ROWS
"""


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    document_id: int
    tenant_id: TenantId
    ordinal: int
    text: str
    distance: float
    plan: str

    @property
    def score(self) -> float:
        """Cosine similarity (1 - cosine distance)."""
        return 1.0 - self.distance


@dataclass(frozen=True)
class ChunkToStore:
    text: str
    token_count: int
    content_hash: bytes
    embedding: npt.NDArray[np.float32]


def verify_rows_belong_to(tenant: TenantId, rows: Sequence[tuple[Any, ...]],
                          tenant_column: int, id_column: int) -> None:
    """Defence in depth: raise if any row carries another tenant's id (and count it)."""
    for row in rows:
        if row[tenant_column] != tenant:
            CROSS_TENANT_ROWS_BLOCKED.inc()
            raise CrossTenantLeakError(tenant, row[tenant_column], row[id_column])


class VectorStore:
    """Search and store chunk vectors of one embedding model, always within a tenant."""

    def __init__(self, db: Database, settings: Settings, model_key: str | None = None) -> None:
        self._db = db
        self._settings = settings
        self.model_key = model_key or settings.embedding_model_key
        self._dimension: int | None = None

    def dimension(self, conn: Connection) -> int:
        if self._dimension is None:
            row = conn.execute("SELECT dimension FROM rag.embedding_models WHERE model_key = %s",
                               [self.model_key]).fetchone()
            if row is None:
                raise UnknownEmbeddingModelError(self.model_key)
            self._dimension = int(row[0])
        return self._dimension

    def search(self, tenant_id: TenantId | str, query: npt.NDArray[np.float32] | Sequence[float],
               k: int = 10) -> list[RetrievedChunk]:
        """The ``k`` chunks of ``tenant_id`` nearest to ``query`` (cosine), nearest first."""
        tenant = parse_tenant_id(tenant_id)
        vector = np.asarray(query, dtype=np.float32)
        with self._db.tenant_session(tenant) as conn:
            self._check_dimension(conn, vector)
            rows = conn.execute(*self.search_statement(tenant, vector, k)).fetchall()
        verify_rows_belong_to(tenant, rows, tenant_column=2, id_column=0)
        return [RetrievedChunk(int(r[0]), int(r[1]), TenantId(r[2]), int(r[3]), str(r[4]),
                               float(r[5]), str(r[6])) for r in rows]

    def search_statement(self, tenant: TenantId, vector: npt.NDArray[np.float32],
                         k: int) -> tuple[str, dict[str, Any]]:
        """The SQL and parameters :meth:`search` runs (in a tenant session), for whoever
        must time that very statement (:mod:`rag_core.ops.rls_overhead`)."""
        return _SEARCH, {
            "tenant": tenant, "model": self.model_key, "query": Vector(vector), "k": k,
            "ef": max(self._settings.hnsw_ef_search, k),
            "exact_max": self._settings.exact_search_max_rows,
            "iterative": self._settings.hnsw_iterative_scan,
            "max_tuples": self._settings.hnsw_max_scan_tuples,
        }

    def add_document(self, tenant_id: TenantId | str, source_uri: str, content_hash: bytes,
                     chunks: Sequence[ChunkToStore], *, title: str = "",
                     metadata: dict[str, Any] | None = None) -> int:
        """Store a document with its chunks and vectors in one tenant transaction."""
        tenant = parse_tenant_id(tenant_id)
        with self._db.tenant_session(tenant) as conn:
            row = conn.execute(
                "INSERT INTO rag.documents (tenant_id, source_uri, content_hash, title, metadata)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING document_id",
                [tenant, source_uri, content_hash, title,
                 Jsonb(metadata or {})]).fetchone()
            assert row is not None
            document_id = int(row[0])
            self.insert_chunks(conn, tenant, document_id, chunks)
        return document_id

    def insert_chunks(self, conn: Connection, tenant: TenantId, document_id: int,
                      chunks: Sequence[ChunkToStore]) -> list[int]:
        """Insert chunks (one statement) and their vectors (binary COPY) on ``conn``."""
        if not chunks:
            return []
        ids = [int(r[0]) for r in conn.execute(
            "INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, token_count, "
            "content_hash) SELECT %s, %s, o, t, n, h FROM unnest(%s::int[], %s::text[], "
            "%s::int[], %s::bytea[]) AS u(o, t, n, h) ORDER BY o RETURNING chunk_id",
            [tenant, document_id, list(range(len(chunks))), [c.text for c in chunks],
             [c.token_count for c in chunks], [c.content_hash for c in chunks]]).fetchall()]
        self.insert_embeddings(conn, tenant, ids, [c.embedding for c in chunks])
        return ids

    def insert_embeddings(self, conn: Connection, tenant: TenantId, chunk_ids: Sequence[int],
                          vectors: Sequence[npt.NDArray[np.float32]]) -> None:
        """Store one vector per chunk for this store's model (binary COPY, then RLS-checked
        INSERT)."""
        if len(chunk_ids) != len(vectors):
            raise ValueError(f"{len(chunk_ids)} chunk ids for {len(vectors)} vectors")
        for vector in vectors:
            self._check_dimension(conn, np.asarray(vector))
        # PostgreSQL refuses COPY FROM into a table with row-level security, so vectors are
        # copied (binary) into a session-local staging table that RLS does not cover, then
        # moved with INSERT ... SELECT, where the policies' WITH CHECK applies to every row.
        conn.execute(_CREATE_STAGING)
        with conn.cursor().copy(
            "COPY pg_temp.staging_chunk_embeddings (chunk_id, embedding) "
            "FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "vector"])
            for chunk_id, vector in zip(chunk_ids, vectors, strict=True):
                copy.write_row([chunk_id, Vector(vector)])
        conn.execute(
            "INSERT INTO rag.chunk_embeddings (chunk_id, model_key, tenant_id, embedding) "
            "SELECT chunk_id, %s, %s, embedding FROM pg_temp.staging_chunk_embeddings",
            [self.model_key, tenant])
        conn.execute("TRUNCATE pg_temp.staging_chunk_embeddings")

    def _check_dimension(self, conn: Connection, vector: npt.NDArray[np.float32]) -> None:
        expected = self.dimension(conn)
        if vector.ndim != 1 or vector.shape[0] != expected:
            raise DimensionMismatchError(self.model_key, expected, int(vector.size))
