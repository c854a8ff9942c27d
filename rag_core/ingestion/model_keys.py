"""Embedding model keys as versions: registered once per exact embedder, counted per tenant,
and retired (their vectors dropped) only when no question searches them any more.

A key names one exact version. A key registered here records the embedder's
``model_id@model_version`` in ``rag.embedding_models.model_id``, so a second embedder cannot
write into it by mistake (:func:`ensure_registered` refuses); a key registered by a migration
records the bare model id (migration 0001's ``minilm-l6-v2``), and a re-embedding into it is
checked on a sample of its stored vectors instead (:mod:`rag_core.ingestion.reembed`).

Retiring a key (:func:`check_droppable`, :func:`drop_vectors`) is what finishing an
embedding rollout does: the flag that routed the canary cohort to the new key is complete at
100 %, every tenant searches the new key, and the old key's vectors go. It is refused while
a live flag routes questions to the key, and, for the process's default key
(``RAG_EMBEDDING_MODEL_KEY``), until a flag that routes everyone to another key is complete
at 100 % with no force-off tenant: a tenant's control questions search the default key. The
key itself stays registered (ingestion jobs name it; its partial index is empty).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.flag_cohorts import LIVE_STATES, Flag
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import ConfigurationError, EmbeddingKeyRefusedError

__all__ = ["KEY_PATTERN", "AdminConnector", "Coverage", "check_droppable", "checked_key",
           "coverage", "drop_vectors", "embedder_label", "ensure_registered",
           "missing_by_tenant", "registered_model", "tenants_with_vectors"]

Connection = psycopg.Connection[tuple[Any, ...]]
AdminConnector = Callable[[], AbstractContextManager[Connection]]

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"  # rag.embedding_models' CHECK
_REGISTERED = "SELECT model_id, dimension FROM rag.embedding_models WHERE model_key = %s"
_REGISTER = "SELECT rag.register_embedding_model(%s, %s, %s, %s, %s)"
_COVERAGE = """
SELECT count(*), count(e.chunk_id)
  FROM rag.chunks c
  LEFT JOIN rag.chunk_embeddings e
    ON e.chunk_id = c.chunk_id AND e.tenant_id = c.tenant_id AND e.model_key = %s
 WHERE c.tenant_id = %s
"""
# In batches: one DELETE of a large tenant's vectors would hold its locks (and bloat one
# transaction) for as long as it runs.
_DELETE_BATCH = """
DELETE FROM rag.chunk_embeddings
 WHERE tenant_id = %s AND model_key = %s
   AND chunk_id IN (SELECT chunk_id FROM rag.chunk_embeddings
                     WHERE tenant_id = %s AND model_key = %s LIMIT %s)
"""
_BYPASSES_RLS = "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
_MISSING_BY_TENANT = """
SELECT c.tenant_id, count(*) FILTER (WHERE e.chunk_id IS NULL)
  FROM rag.chunks c
  LEFT JOIN rag.chunk_embeddings e
    ON e.chunk_id = c.chunk_id AND e.tenant_id = c.tenant_id AND e.model_key = %s
 GROUP BY c.tenant_id
 ORDER BY c.tenant_id
"""
_TENANTS_WITH_VECTORS = """
SELECT t.tenant_id FROM rag.tenants t
 WHERE EXISTS (SELECT 1 FROM rag.chunk_embeddings e
                WHERE e.tenant_id = t.tenant_id AND e.model_key = %s)
 ORDER BY t.tenant_id
"""


@dataclass(frozen=True)
class Coverage:
    """How many of a tenant's chunks have a vector under one key."""

    tenant_id: TenantId
    model_key: str
    chunks: int
    with_vectors: int

    @property
    def missing(self) -> int:
        return self.chunks - self.with_vectors

    def as_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "model_key": self.model_key,
                "chunks": self.chunks, "with_vectors": self.with_vectors,
                "missing": self.missing}


def embedder_label(embedder: Embedder) -> str:
    """``model_id@model_version``: what a key registered here records as its model."""
    return f"{embedder.model_id}@{embedder.model_version}"


def checked_key(model_key: str) -> str:
    if not re.match(KEY_PATTERN, model_key):
        raise ConfigurationError("model_key", model_key, "lower-case letters, digits, '.', "
                                 "'_', '-', starting with a letter or digit, at most 63")
    return model_key


def registered_model(db: Database, model_key: str) -> tuple[str, int] | None:
    """``(model_id, dimension)`` the key is registered with, or None (application role)."""
    with db.unscoped_session() as conn:
        row = conn.execute(_REGISTERED, [model_key]).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def ensure_registered(db: Database, admin: AdminConnector, model_key: str,
                      embedder: Embedder, *, m: int = 16, ef_construction: int = 64) -> bool:
    """Register ``model_key`` for ``embedder`` (and build its partial HNSW index) unless it
    is registered; True when registered now. Only the registration needs the admin (DDL):
    a key that exists is checked as the application role.

    Raises :class:`EmbeddingKeyRefusedError` when the key is registered for another model,
    version or dimension."""
    checked_key(model_key)
    existing = registered_model(db, model_key)
    if existing is None:
        with admin() as conn:
            conn.execute(_REGISTER, [model_key, embedder_label(embedder), embedder.dimension,
                                     m, ef_construction])
        # Registered meanwhile by another process with another embedder? Checked below.
        existing = registered_model(db, model_key)
        assert existing is not None
        _check_same_model(model_key, embedder, *existing)
        return True
    _check_same_model(model_key, embedder, *existing)
    return False


def _check_same_model(model_key: str, embedder: Embedder, model_id: str,
                      dimension: int) -> None:
    if dimension != embedder.dimension:
        raise EmbeddingKeyRefusedError(model_key, "re-embedding", f"it is registered with "
                                       f"dimension {dimension}, the embedder has "
                                       f"{embedder.dimension}")
    # A bare model id (a key registered by a migration) says nothing about the version: the
    # caller checks a sample of the stored vectors instead.
    if model_id not in (embedder_label(embedder), embedder.model_id):
        raise EmbeddingKeyRefusedError(model_key, "re-embedding", f"it holds vectors of "
                                       f"{model_id}, the embedder is "
                                       f"{embedder_label(embedder)}; use a new key")


def coverage(db: Database, tenant_id: TenantId | str, model_key: str) -> Coverage:
    """The tenant's chunks and how many of them have a vector under ``model_key``."""
    tenant = parse_tenant_id(tenant_id)
    with db.tenant_session(tenant) as conn:
        row = conn.execute(_COVERAGE, [model_key, tenant]).fetchone()
    assert row is not None
    return Coverage(tenant, model_key, int(row[0]), int(row[1]))


def check_droppable(model_key: str, *, default_key: str, flags: Sequence[Flag]) -> None:
    """Refuse (:class:`EmbeddingKeyRefusedError`) to drop the vectors of a key that some
    tenant's questions may still search: one a live flag routes to, or the default key
    before an embedding rollout to another key is complete at 100 % for every tenant."""
    routing = sorted(f.name for f in flags if f.state in LIVE_STATES
                     and f.variant.get("embedding_model_key") == model_key)
    if routing:
        raise EmbeddingKeyRefusedError(model_key, "drop", f"flag(s) {', '.join(routing)} "
                                       "route questions to it; roll them back first")
    if model_key != default_key:
        return
    superseded = [f.name for f in flags if f.state == "complete" and f.percent == 100
                  and not f.force_off
                  and f.variant.get("embedding_model_key") not in (None, model_key)]
    if not superseded:
        raise EmbeddingKeyRefusedError(
            model_key, "drop", "it is the default key (RAG_EMBEDDING_MODEL_KEY) and no flag "
            "routing every tenant to another key is complete at 100 %; finish the rollout, "
            "or switch RAG_EMBEDDING_MODEL_KEY (and RAG_EMBEDDING_BACKEND) first")


def drop_vectors(db: Database, tenant_id: TenantId | str, model_key: str, *,
                 batch: int = 5000) -> int:
    """Delete the tenant's vectors under ``model_key`` in batches (one transaction each, as
    the application role in the tenant's session); returns how many went. Chunks, documents
    and the other keys' vectors are untouched. Check :func:`check_droppable` first."""
    tenant = parse_tenant_id(tenant_id)
    dropped = 0
    while True:
        with db.tenant_session(tenant) as conn:
            deleted = conn.execute(_DELETE_BATCH, [tenant, model_key, tenant, model_key,
                                                   batch]).rowcount
        dropped += deleted
        if deleted < batch:
            return dropped


def _require_bypass(conn: Connection) -> None:
    """Row-level security is FORCEd on these tables: a role that does not bypass it would
    see no tenant at all, which must not pass for "nothing there"."""
    row = conn.execute(_BYPASSES_RLS).fetchone()
    if row is None or not row[0]:
        raise ConfigurationError("DATABASE_URL", "(the admin role)",
                                 "it does not bypass row-level security, so it cannot see "
                                 "every tenant's vectors; name the tenants with --tenant")


def tenants_with_vectors(conn: Connection, model_key: str) -> list[TenantId]:
    """Every tenant holding vectors under ``model_key``, read on the admin connection."""
    _require_bypass(conn)
    return [parse_tenant_id(str(t)) for (t,) in
            conn.execute(_TENANTS_WITH_VECTORS, [model_key]).fetchall()]


def missing_by_tenant(conn: Connection, model_key: str) -> dict[TenantId, int]:
    """Every tenant with chunks, and how many of them have no vector under ``model_key``
    (0: covered), read on the admin connection in one statement."""
    _require_bypass(conn)
    return {parse_tenant_id(str(t)): int(n) for t, n in
            conn.execute(_MISSING_BY_TENANT, [model_key]).fetchall()}
