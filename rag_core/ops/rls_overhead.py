"""What the row-level security policy costs one tenant search, measured.

The warning alert "RLS policy evaluation time > 100 ms" needs a number that no query plan
shows by itself: the policy (``tenant_id = rag.current_tenant_id()``, ENABLEd and FORCEd on
every tenant table) is extra filter work inside the product's search, and may change its
plan. So it is measured as a difference, the same way every time:

- **The product's own statement.** :meth:`VectorStore.search_statement` gives the SQL and
  parameters ``VectorStore.search`` runs; nothing here restates the search.
- **With the policy:** as the application role, in a tenant session (``Database.tenant_session``),
  exactly as a request runs it.
- **Without it:** as the admin, in a transaction with ``row_security = off`` and the same
  ``app.tenant_id``; only the statement's explicit tenant filter (the second isolation layer,
  present in every query) confines it. ``row_security = off`` makes PostgreSQL refuse
  (SQLSTATE 42501) instead of silently applying a policy: an admin role that is itself
  subject to RLS (a table owner under FORCE) fails the sample rather than producing a
  "without" figure that had the policy in it. It needs a superuser or BYPASSRLS admin (the
  embedded server's admin is the superuser).
- **Server time, not wall time.** Each run is ``EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON)``
  and counts its planning plus execution time as PostgreSQL reports it: the two runs take
  different connections (the application's may go through a pooler, the admin's through
  none), so wall time would compare network paths, not policies. ``TIMING OFF`` leaves out
  the per-node clock reads that would inflate both sides.
- **Warmed, paired and repeated.** One unmeasured run of each side first (a session's
  first call of the search function compiles it), then ``repeats`` pairs, alternating which
  side runs first (the first run warms the buffers for the second), medians compared: one
  noisy run does not make a sample. The rows each side returned are kept: they must be
  equal (the policy and the explicit filter select the same tenant's rows).

One tenant per sample: the given one, or the next tenant holding vectors of the store's
model after the previous sample's (round robin by id, through the ``(tenant_id, model_key)``
index), searched with a random unit vector of the model's dimension (no embedding model is
loaded). The admin sees tenant ids here, never in a metric: the caller exports the
difference only (:mod:`rag_core.ops.rls_sampler`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pgvector.psycopg import register_vector

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Connection, Database
from rag_core.errors import UnknownEmbeddingModelError
from rag_core.retrieval.vector_store import VectorStore

__all__ = ["AdminConnections", "RlsOverheadSample", "measure_rls_overhead", "next_tenant"]

#: Opens an autocommit admin connection (``Platform.admin_connection``).
AdminConnections = Callable[[], AbstractContextManager[Connection]]

_EXPLAIN = "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) "
_BYPASS = ("SELECT set_config('row_security', 'off', true), "
           "set_config('app.tenant_id', %s, true), set_config('statement_timeout', %s, true)")
_NEXT_TENANT = """
SELECT t.tenant_id FROM rag.tenants t
 WHERE t.tenant_id > %(after)s
   AND EXISTS (SELECT 1 FROM rag.chunk_embeddings e
                WHERE e.tenant_id = t.tenant_id AND e.model_key = %(model)s)
 ORDER BY t.tenant_id LIMIT 1
"""
_DIMENSION = "SELECT dimension FROM rag.embedding_models WHERE model_key = %s"


@dataclass(frozen=True)
class RlsOverheadSample:
    """One paired measurement: server milliseconds of each run, with and without the policy."""

    tenant_id: TenantId
    enforced_ms: tuple[float, ...]
    bypassed_ms: tuple[float, ...]
    rows_enforced: int
    rows_bypassed: int
    took_s: float  # wall time of the whole sample, both sides and the tenant lookup

    @property
    def overhead_s(self) -> float:
        """Median with the policy minus median without it, in seconds (may be below 0:
        noise when the policy costs nothing measurable)."""
        return (statistics.median(self.enforced_ms) - statistics.median(self.bypassed_ms)) / 1000

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``rag rls-overhead --json``, tests); the tenant id is for an
        operator's eyes, never a metric label."""
        return {"tenant_id": self.tenant_id, "overhead_ms": round(self.overhead_s * 1000, 3),
                "enforced_ms": [round(v, 3) for v in self.enforced_ms],
                "bypassed_ms": [round(v, 3) for v in self.bypassed_ms],
                "rows_enforced": self.rows_enforced, "rows_bypassed": self.rows_bypassed,
                "took_s": round(self.took_s, 3)}


def next_tenant(admin: Connection, model_key: str, after: str = "") -> TenantId | None:
    """The first tenant id above ``after`` holding vectors of ``model_key``, wrapping
    around to the lowest; None when no tenant has any. Looked up with row security off, like
    the run without the policy: an admin subject to RLS fails here (42501) instead of seeing
    no tenant."""
    with admin.transaction():
        admin.execute("SELECT set_config('row_security', 'off', true)")
        row = admin.execute(_NEXT_TENANT, {"after": after, "model": model_key}).fetchone()
        if row is None and after:
            row = admin.execute(_NEXT_TENANT, {"after": "", "model": model_key}).fetchone()
    return None if row is None else parse_tenant_id(row[0])


def _server_ms(conn: Connection, sql: str, params: dict[str, Any]) -> tuple[float, int]:
    """Planning + execution milliseconds of ``sql`` as PostgreSQL measured them, and the
    rows its top node returned."""
    row = conn.execute(_EXPLAIN + sql, params).fetchone()
    assert row is not None
    report = row[0][0]  # FORMAT JSON: a one-element list, parsed by psycopg
    return (float(report["Planning Time"]) + float(report["Execution Time"]),
            int(report["Plan"]["Actual Rows"]))


def measure_rls_overhead(database: Database, admin: AdminConnections, store: VectorStore, *,
                         k: int, repeats: int = 3, statement_timeout_ms: int = 30_000,
                         tenant: TenantId | None = None, after: str = "",
                         rng: np.random.Generator | None = None) -> RlsOverheadSample | None:
    """One sample (see the module docstring) for ``tenant``, or for the next tenant with
    vectors after ``after``; None when no tenant has vectors of the store's model.

    Raises what the database raises (``psycopg.Error``; 42501 when the admin cannot turn
    row security off) and ``DatabaseUnavailableError`` when the admin cannot connect."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    started = time.perf_counter()
    generator = rng if rng is not None else np.random.default_rng()
    with admin() as bypassing:
        register_vector(bypassing)
        chosen = tenant if tenant is not None else next_tenant(bypassing, store.model_key, after)
        if chosen is None:
            return None
        row = bypassing.execute(_DIMENSION, [store.model_key]).fetchone()
        if row is None:
            raise UnknownEmbeddingModelError(store.model_key)
        vector = generator.standard_normal(int(row[0])).astype(np.float32)
        vector /= np.linalg.norm(vector)
        sql, params = store.search_statement(chosen, vector, k)

        def enforced() -> tuple[float, int]:
            with database.tenant_session(chosen) as conn:
                return _server_ms(conn, sql, params)

        def bypassed() -> tuple[float, int]:
            with bypassing.transaction():
                bypassing.execute(_BYPASS, [chosen, str(statement_timeout_ms)])
                return _server_ms(bypassing, sql, params)

        # One unmeasured run each first: the admin connection is new, and a session's first
        # call of the search function compiles it (measured at 3-7 ms here, more than the
        # search), which would show as a policy that costs less than nothing.
        enforced()
        bypassed()
        with_policy: list[tuple[float, int]] = []
        without: list[tuple[float, int]] = []
        for i in range(repeats):
            if i % 2 == 0:
                with_policy.append(enforced())
                without.append(bypassed())
            else:
                without.append(bypassed())
                with_policy.append(enforced())
    return RlsOverheadSample(
        chosen, tuple(ms for ms, _ in with_policy), tuple(ms for ms, _ in without),
        rows_enforced=with_policy[-1][1], rows_bypassed=without[-1][1],
        took_s=time.perf_counter() - started)
