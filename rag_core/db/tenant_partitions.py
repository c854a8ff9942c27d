"""Moving a tenant's vectors between the shared partition and one of its own, online
(migration 0014 describes the storage and the plans; :mod:`rag_core.ops.rebalance` decides
who moves).

Promotion, each step its own transaction, every one safe to repeat after a crash:

1. the tenant's partition is created as a plain table with the CHECKs of its bound, its RLS
   and policy, and attached while empty (SHARE UPDATE EXCLUSIVE on the parent: reads and
   writes go on; the foreign keys' brief locks on rag.chunks are why every DDL runs under
   ``lock_timeout`` and retries instead of queueing writers behind it);
2. the plan switches to ``promoting`` under the tenant row's FOR UPDATE, which waits for
   the writers that hold it FOR KEY SHARE (rag.embedding_shard()): from then on every
   writer writes to the new partition, and every row in the shared one was committed before;
3. rows move in batches, each one DELETE ... RETURNING into an INSERT in one transaction, so
   every snapshot holds each row exactly once (searches meanwhile read both partitions);
   then both partitions are ANALYZEd: without statistics the planner took the new partition
   for a near-empty table and searched its 250,000 rows exactly, graph or not, until
   autovacuum got to it (``rag bench index``, reports/index/20261202T073847Z);
4. when the moved rows were at least ``rebuild_shared_graphs_fraction`` of the shared
   partition, its graphs and b-trees are rebuilt CONCURRENTLY and it is VACUUMed
   (:mod:`rag_core.db.shared_graphs`: VACUUM would otherwise repair the graphs around every
   moved row, for an hour at 495,000 rows). This comes before the tenant's own graph: the
   move's deletions start autovacuum on the shared partition within a minute (seen in
   ``rag bench index``, 250,000 rows moved), and that repair would compete with the graph
   build for the cores until the rebuild's lock cancelled it;
5. the tenant's HNSW graph per model key is built CONCURRENTLY, with the parameters its size
   calls for (writers go on), then loaded into shared_buffers (:mod:`rag_core.db.buffer_warmup`);
6. the plan switches to ``own`` with its ef_search: searches use the graph;
7. the new partition is VACUUMed (the searches use the graph meanwhile): autovacuum would
   otherwise come for the moved rows minutes later and rewrite every page while the tenant's
   searches run (seen in ``rag bench index --phase plan``, after its settle); ``vacuum_s``.

Demotion is the same in reverse (``demoting``, rows back, shared partition ANALYZEd, ``shared``),
then the emptied partition is detached CONCURRENTLY and dropped, as when a tenant is deleted.

Hand-written rather than pg_partman: that extension manages time and id ranges, not a move
of one tenant's rows between partitions under live traffic, and is not installed here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config.retrieval import PartitionPolicy
from rag_core.db.buffer_warmup import prewarm_indexes
from rag_core.db.shared_graphs import rebuild_shared_graphs
from rag_core.errors.storage import DatabaseError, PartitionBusyError
from rag_core.errors.tenancy import UnknownTenantError

__all__ = ["GraphParams", "MoveReport", "TenantPartitions", "graph_params_for",
           "hnsw_index_name", "partition_name", "tenant_partitions"]

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

SHARED = "shared"
_PARTITIONS = """
SELECT c.relname, i.inhdetachpending
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'rag.chunk_embeddings'::regclass AND c.relname <> 'chunk_embeddings_shared'
"""
_PARAMS = """
SELECT m, ef_construction, ef_search FROM rag.partition_graph_params
 WHERE min_rows <= %s ORDER BY min_rows DESC LIMIT 1
"""
_LOCK_TENANT = "SELECT embedding_plan FROM rag.tenants WHERE tenant_id = %s FOR UPDATE"
_SET_PLAN = """
UPDATE rag.tenants SET embedding_plan = %(plan)s, embedding_hnsw_m = %(m)s,
       embedding_hnsw_ef_construction = %(efc)s, embedding_ef_search = %(ef)s,
       embedding_plan_at = now()
 WHERE tenant_id = %(tenant)s
"""
_MOVE = """
WITH moved AS (
    DELETE FROM rag.{source} s
     WHERE s.tenant_id = %(tenant)s
       AND (s.chunk_id, s.model_key) IN (SELECT chunk_id, model_key FROM rag.{source}
                                          WHERE tenant_id = %(tenant)s LIMIT %(batch)s)
    RETURNING s.chunk_id, s.model_key, s.tenant_id, s.embedding)
INSERT INTO rag.{target} (chunk_id, model_key, tenant_id, embedding, shard)
SELECT chunk_id, model_key, tenant_id, embedding, %(shard)s FROM moved
"""


def partition_name(tenant: TenantId | str) -> str:
    """The tenant's partition (rag.tenant_partition_name of migration 0014)."""
    return f"chunk_embeddings_{parse_tenant_id(tenant)}"


def hnsw_index_name(tenant: TenantId | str, model_key: str) -> str:
    """The tenant's graph for a model key (rag.tenant_hnsw_index_name of migration 0014)."""
    digest = hashlib.md5(model_key.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"cet_{parse_tenant_id(tenant)[3:]}_hnsw_{digest}"


@dataclass(frozen=True)
class GraphParams:
    m: int
    ef_construction: int
    ef_search: int

    def as_dict(self) -> dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search}


@dataclass(frozen=True)
class MoveReport:
    """What one promotion or demotion did (seconds per step, rows moved)."""

    tenant_id: TenantId
    direction: str  # "promote" | "demote"
    rows_moved: int
    batches: int
    attach_s: float = 0.0
    move_s: float = 0.0  # the batches, then the ANALYZE of both partitions
    index_s: float = 0.0
    total_s: float = 0.0
    rebuild_s: float = 0.0  # the shared partition's graphs rebuilt (0: not needed)
    vacuum_s: float = 0.0  # the tenant's new partition VACUUMed (promotion only)

    def as_dict(self) -> dict[str, Any]:
        return {key: round(value, 3) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def graph_params_for(conn: Connection, rows: int) -> GraphParams:
    """The graph parameters rag.partition_graph_params gives a tenant of ``rows`` vectors."""
    row = conn.execute(_PARAMS, [rows]).fetchone()
    if row is None:  # the table was emptied by hand: pgvector's defaults
        return GraphParams(16, 64, 100)
    return GraphParams(int(row[0]), int(row[1]), int(row[2]))


def tenant_partitions(conn: Connection) -> dict[TenantId, bool]:
    """Every tenant partition attached to rag.chunk_embeddings -> whether a concurrent
    detach of it is pending (interrupted)."""
    return {parse_tenant_id(str(name)[len("chunk_embeddings_"):]): bool(pending)
            for name, pending in conn.execute(_PARTITIONS).fetchall()}


class TenantPartitions:
    """Promotes and demotes tenants on an autocommit admin connection (the owner: DDL)."""

    def __init__(self, conn: Connection, policy: PartitionPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.conn = conn
        self.policy = policy or PartitionPolicy()
        self._sleep = sleep

    # --- the two moves -----------------------------------------------------------------------
    def promote(self, tenant_id: TenantId | str, params: GraphParams,
                progress: Callable[[int], None] | None = None) -> MoveReport:
        """Give the tenant its own partition and graph (or finish an interrupted promotion).
        ``progress`` is called with the rows moved so far after each batch."""
        tenant = parse_tenant_id(tenant_id)
        table = sql.Identifier("rag", partition_name(tenant))
        self._require_autocommit()
        started = time.perf_counter()
        self.attach(tenant)
        attached = time.perf_counter()
        self._switch(tenant, {SHARED, "promoting"}, "promoting", params)
        moved, batches = self._move(tenant, "chunk_embeddings_shared", partition_name(tenant),
                                    tenant, progress)
        self._analyze(partition_name(tenant), "chunk_embeddings_shared")
        move_done = time.perf_counter()
        rebuild_s = 0.0
        if moved and self._shared_removed_fraction(moved) >= (
                self.policy.rebuild_shared_graphs_fraction):
            rebuild_shared_graphs(self.conn, self.policy.index_build_memory)
            rebuild_s = time.perf_counter() - move_done
        graphs_started = time.perf_counter()
        self.build_graphs(tenant, params)
        prewarm_indexes(self.conn, partition_name(tenant))  # before searches switch to them
        index_done = time.perf_counter()
        self._switch(tenant, {"promoting", "own"}, "own", params)
        vacuum_started = time.perf_counter()  # SHARE UPDATE EXCLUSIVE: reads and writes go on
        self.conn.execute(sql.SQL("VACUUM {}").format(table))
        finished = time.perf_counter()
        return MoveReport(tenant, "promote", moved, batches, attached - started,
                          move_done - attached, index_done - graphs_started,
                          finished - started, rebuild_s, finished - vacuum_started)

    def demote(self, tenant_id: TenantId | str,
               progress: Callable[[int], None] | None = None) -> MoveReport:
        """Move the tenant back to the shared partition and drop its own."""
        tenant = parse_tenant_id(tenant_id)
        self._require_autocommit()
        started = time.perf_counter()
        moved = batches = 0
        if tenant in tenant_partitions(self.conn):
            self._switch(tenant, {"own", "demoting", "promoting"}, "demoting", None)
            moved, batches = self._move(tenant, partition_name(tenant),
                                        "chunk_embeddings_shared", SHARED, progress)
            self._analyze("chunk_embeddings_shared")
        move_done = time.perf_counter()
        self._switch(tenant, {"demoting", SHARED}, SHARED, None)
        self.drop(tenant)
        return MoveReport(tenant, "demote", moved, batches, 0.0, move_done - started, 0.0,
                          time.perf_counter() - started)

    def set_ef_search(self, tenant_id: TenantId | str, ef_search: int) -> None:
        """Change an own-partition tenant's ef_search (its graph stays)."""
        tenant = parse_tenant_id(tenant_id)

        def update() -> None:
            with self.conn.transaction():
                self._scope(tenant)
                self.conn.execute("UPDATE rag.tenants SET embedding_ef_search = %s, "
                                  "embedding_plan_at = now() WHERE tenant_id = %s "
                                  "AND embedding_plan = 'own'", [ef_search, tenant])
        self._retrying(tenant, "ef_search change", update)

    # --- steps -------------------------------------------------------------------------------
    def attach(self, tenant: TenantId) -> None:
        """Create and attach the tenant's (empty) partition, unless it is attached."""
        if tenant in tenant_partitions(self.conn):
            return
        table = sql.Identifier("rag", partition_name(tenant))
        literal = sql.Literal(str(tenant))
        statements = [
            sql.SQL("CREATE TABLE IF NOT EXISTS {t} (LIKE rag.chunk_embeddings "
                    "INCLUDING DEFAULTS)").format(t=table),
            sql.SQL("ALTER TABLE {t} ALTER COLUMN shard SET DEFAULT {v}").format(
                t=table, v=literal),
            sql.SQL("ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {c}, ADD CONSTRAINT {c} "
                    "CHECK (shard = {v} AND tenant_id = {v})").format(
                t=table, v=literal, c=sql.Identifier(f"{partition_name(tenant)}_bound")),
            sql.SQL("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY").format(t=table),
            sql.SQL("ALTER TABLE {t} FORCE ROW LEVEL SECURITY").format(t=table),
            sql.SQL("DROP POLICY IF EXISTS tenant_isolation ON {t}").format(t=table),
            sql.SQL("CREATE POLICY tenant_isolation ON {t} FOR ALL TO PUBLIC "
                    "USING (tenant_id = rag.current_tenant_id()) "
                    "WITH CHECK (tenant_id = rag.current_tenant_id())").format(t=table),
            sql.SQL("REVOKE ALL ON {t} FROM PUBLIC").format(t=table),
            sql.SQL("ALTER TABLE rag.chunk_embeddings ATTACH PARTITION {t} "
                    "FOR VALUES IN ({v})").format(t=table, v=literal),
        ]

        def create() -> None:
            with self.conn.transaction():
                self._lock_timeout()
                for statement in statements:
                    self.conn.execute(statement)
        self._retrying(tenant, "attach", create)

    def build_graphs(self, tenant: TenantId, params: GraphParams) -> None:
        """One HNSW index per registered model key on the tenant's partition, built
        CONCURRENTLY (an invalid leftover of an interrupted build is dropped first)."""
        table = sql.Identifier("rag", partition_name(tenant))
        models = self.conn.execute(
            "SELECT model_key, dimension FROM rag.embedding_models ORDER BY 1").fetchall()
        self.conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
            sql.Literal(self.policy.index_build_memory)))
        try:
            for model_key, dimension in models:
                name = hnsw_index_name(tenant, str(model_key))
                valid = self.conn.execute(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = "
                    "i.indexrelid WHERE c.relname = %s AND c.relnamespace = 'rag'::regnamespace",
                    [name]).fetchone()
                if valid is not None and valid[0]:
                    continue
                if valid is not None:
                    self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        sql.Identifier("rag", name)))
                self.conn.execute(sql.SQL(
                    "CREATE INDEX CONCURRENTLY {i} ON {t} USING hnsw "
                    "((embedding::vector({d})) vector_cosine_ops) "
                    "WITH (m = {m}, ef_construction = {efc}) WHERE model_key = {k}").format(
                    i=sql.Identifier(name), t=table, d=sql.Literal(int(dimension)),
                    m=sql.Literal(params.m), efc=sql.Literal(params.ef_construction),
                    k=sql.Literal(str(model_key))))
        finally:
            self.conn.execute("RESET maintenance_work_mem")

    def drop(self, tenant_id: TenantId | str) -> bool:
        """Detach (CONCURRENTLY: reads and writes of other tenants go on) and drop the
        tenant's partition; False when it has none. Its rows must be gone or moved."""
        tenant = parse_tenant_id(tenant_id)
        partitions = tenant_partitions(self.conn)
        table = sql.Identifier("rag", partition_name(tenant))
        if tenant in partitions:
            # CONCURRENTLY cannot run in a transaction block: a caller's open transaction
            # (tenant deletion on a non-autocommit connection) gets the plain DETACH, whose
            # ACCESS EXCLUSIVE lock on the parent lasts only as long as that transaction.
            concurrently = self.conn.autocommit and (self.conn.info.transaction_status
                                                     == psycopg.pq.TransactionStatus.IDLE)
            suffix = ("FINALIZE" if partitions[tenant]
                      else "CONCURRENTLY" if concurrently else "")
            detach = sql.SQL("ALTER TABLE rag.chunk_embeddings DETACH PARTITION {t} "
                             + suffix).format(t=table)

            def run_detach() -> None:
                self._lock_timeout()
                try:
                    self.conn.execute(detach)
                finally:
                    self.conn.execute("RESET lock_timeout")
            self._retrying(tenant, "detach", run_detach)
        exists = self.conn.execute("SELECT to_regclass(%s)",
                                   [f"rag.{partition_name(tenant)}"]).fetchone()
        if exists is None or exists[0] is None:
            return tenant in partitions

        def run_drop() -> None:
            with self.conn.transaction():
                self._lock_timeout()
                self.conn.execute(sql.SQL("DROP TABLE {t}").format(t=table))
        self._retrying(tenant, "drop", run_drop)
        return True

    # --- helpers -----------------------------------------------------------------------------
    def _switch(self, tenant: TenantId, allowed: set[str], plan: str,
                params: GraphParams | None) -> None:
        """Set the tenant's plan under its row's FOR UPDATE (waits for the writers holding
        it FOR KEY SHARE, at most lock_timeout per attempt)."""
        def switch() -> None:
            with self.conn.transaction():
                self._lock_timeout()
                self._scope(tenant)
                row = self.conn.execute(_LOCK_TENANT, [tenant]).fetchone()
                if row is None:
                    raise UnknownTenantError(tenant)
                if row[0] not in allowed:
                    raise DatabaseError(f"tenant {tenant} has plan {row[0]!r}, not one of "
                                        f"{sorted(allowed)}: another rebalance is moving it")
                graph: dict[str, int | None] = {"m": None, "efc": None, "ef": None} if (
                    params is None) else {"m": params.m, "efc": params.ef_construction,
                                          "ef": params.ef_search}
                self.conn.execute(_SET_PLAN, {"plan": plan, "tenant": tenant, **graph})
        self._retrying(tenant, f"switch to {plan}", switch)

    def _move(self, tenant: TenantId, source: str, target: str, shard: str,
              progress: Callable[[int], None] | None) -> tuple[int, int]:
        statement = sql.SQL(_MOVE).format(source=sql.Identifier(source),
                                          target=sql.Identifier(target))
        moved = batches = 0
        while True:
            def batch() -> int:
                with self.conn.transaction():
                    self._lock_timeout()
                    self._scope(tenant)
                    return self.conn.execute(statement, {
                        "tenant": tenant, "batch": self.policy.move_batch_rows,
                        "shard": shard}).rowcount
            count = self._retrying(tenant, "move", batch)
            if count == 0:
                return moved, batches
            moved += count
            batches += 1
            if progress is not None:
                progress(moved)

    def _analyze(self, *tables: str) -> None:
        """Fresh planner statistics for the partitions a move changed (ANALYZE samples,
        takes only SHARE UPDATE EXCLUSIVE: reads and writes go on)."""
        for table in tables:
            self.conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("rag", table)))

    def _shared_removed_fraction(self, moved: int) -> float:
        """The share of the shared partition's rows (as the move's ANALYZE counted them) this
        move took out."""
        row = self.conn.execute("SELECT greatest(reltuples, 0) FROM pg_class "
                                "WHERE oid = 'rag.chunk_embeddings_shared'::regclass").fetchone()
        return moved / max(moved + (float(row[0]) if row is not None else 0.0), 1.0)

    def _require_autocommit(self) -> None:
        if not self.conn.autocommit:
            raise ValueError("moving a tenant needs an autocommit connection (each step is "
                             "its own transaction; CREATE INDEX CONCURRENTLY)")

    def _scope(self, tenant: TenantId) -> None:
        # RLS is FORCEd on rag.tenants and on every partition, for the owner too.
        self.conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant])

    def _lock_timeout(self) -> None:
        self.conn.execute("SELECT set_config('lock_timeout', %s, %s)",
                          [f"{self.policy.lock_timeout_ms}ms", self.conn.info.transaction_status
                           != psycopg.pq.TransactionStatus.IDLE])

    def _retrying(self, tenant: TenantId, step: str, action: Callable[[], T]) -> T:
        for attempt in range(1, self.policy.lock_attempts + 1):
            try:
                return action()
            except psycopg.errors.LockNotAvailable:
                if attempt == self.policy.lock_attempts:
                    break
                self._sleep(self.policy.retry_wait_s)
        raise PartitionBusyError(tenant, step, self.policy.lock_attempts)
