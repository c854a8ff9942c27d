"""``rag isolation-probe``: try hard to make one tenant see or change another's rows.

It creates tenants of very different sizes with random vectors under a dedicated embedding
model key (so product vectors are untouched), then runs randomized probes as the
application role: searches (exact and HNSW plans), raw SELECTs without a tenant filter,
searches for one tenant from another's session, sessions with no tenant or a forged one,
SQL-injection strings as ids, writes aimed at other tenants, and direct reads of the vector
partitions (migration 0014). Probe tenants at or above ``RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS``
are promoted to their own partition first, as ``rag tenant rebalance`` would, so both plans
are attacked. A *leak* is any row of another tenant that reaches the caller, or any foreign
write that takes effect. Probe tenants (and their partitions) are deleted at the end.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector

from rag_core.common.tenancy import TenantId, new_tenant_id, parse_tenant_id
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import pooler_options, resolve_targets
from rag_core.db.pool import Connection, Database
from rag_core.db.schema import TENANT_TABLES
from rag_core.db.tenant_partitions import (
    TenantPartitions,
    graph_params_for,
    partition_name,
)
from rag_core.errors import CrossTenantLeakError, InvalidTenantIdError
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore

PROBE_MODEL_KEY = "isolation-probe"
DIMENSION = 384
DEFAULT_SIZES = (10, 100, 1_000, 4_000, 12_000)

INJECTION_IDS = (
    "tn_' OR '1'='1", "tn_00000000000000000000000000000000' OR 1=1 --",
    "'; DROP TABLE rag.chunks; --", "tn_%", "tn_*", "%", "", " ", "tn_",
    "TN_0123456789ABCDEF0123456789ABCDEF", "tn_0123456789abcdef0123456789abcdef\n",
    "tn_0123456789abcdef0123456789abcde", "tn_0123456789abcdef0123456789abcdeff",
    "tn_0123456789abcdef0123456789abcdeg", "tn_0123456789abcdef0123456789abcdef\x00",
    "tn_\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"
    "abcdef0123456789abcdef", "NULL", "null", "*", "tn_\\x00",
    "tn_0123456789abcdef0123456789abcdef;SET app.tenant_id=''",
)

_RAW_SEARCH = """
SELECT chunk_id, tenant_id, plan
  FROM rag.search_chunks(%s, %s, %s, %s, %s, %s, 'relaxed_order', 20000)
"""


@dataclass
class ProbeReport:
    probes: int = 0
    leaks: int = 0
    refused_writes: int = 0
    write_attempts: int = 0
    searches: int = 0
    short_results: int = 0
    rejected_ids: int = 0
    refused_searches: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    plans: Counter[str] = field(default_factory=Counter)
    leak_examples: list[str] = field(default_factory=list)
    tenant_sizes: list[int] = field(default_factory=list)
    promoted_sizes: list[int] = field(default_factory=list)  # tenants with their own partition
    refused_partition_reads: int = 0
    setup_s: float = 0.0
    elapsed_s: float = 0.0

    def leak(self, description: str) -> None:
        self.leaks += 1
        if len(self.leak_examples) < 20:
            self.leak_examples.append(description)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kinds"] = dict(self.kinds)
        data["plans"] = dict(self.plans)
        return data


class _Rollback(Exception):
    """Raised inside a session to roll back a write probe whatever its outcome."""


class IsolationProbe:
    def __init__(self, settings: Settings, db: Database, seed: int = 0,
                 sizes: Sequence[int] = DEFAULT_SIZES) -> None:
        self.settings = settings
        self.db = db
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.tenants: list[TenantId] = []
        self.size_of: dict[TenantId, int] = {}
        self.chunk_ids: dict[TenantId, list[int]] = {}
        self.document_ids: dict[TenantId, int] = {}
        self.promoted: list[TenantId] = []
        self.report = ProbeReport(tenant_sizes=self.sizes)
        self.store = VectorStore(db, settings, model_key=PROBE_MODEL_KEY)

    # --- set-up and tear-down (owner connection for DDL and tenant rows) --------------------
    def setup(self) -> None:
        started = time.perf_counter()
        admin_url = resolve_targets(self.settings).admin_url
        with psycopg.connect(admin_url, autocommit=True,
                             **pooler_options(self.settings.db_pooler)) as conn:
            conn.execute("SELECT rag.register_embedding_model(%s, %s, %s)",
                         [PROBE_MODEL_KEY, "random-unit-vectors", DIMENSION])
            for size in self.sizes:
                tenant = tenant_admin.create_tenant(conn, display_name=f"probe size {size}")
                self.tenants.append(tenant)
                self.size_of[tenant] = size
        for tenant in self.tenants:
            # Clustered vectors: nearest neighbours then lie in other tenants' regions too.
            centres = self.np_rng.standard_normal((8, DIMENSION)).astype(np.float32)
            size = self.size_of[tenant]
            vectors = centres[self.np_rng.integers(0, 8, size)] + 0.5 * (
                self.np_rng.standard_normal((size, DIMENSION)).astype(np.float32))
            chunks = [ChunkToStore(f"probe chunk {i}", 3,
                                   hashlib.sha256(f"{tenant}:{i}".encode()).digest(), v)
                      for i, v in enumerate(vectors)]
            # Documents of at most 1,000 chunks: each insert into the HNSW-indexed table
            # stays well inside the statement timeout even on a loaded machine.
            for part, start in enumerate(range(0, size, 1000)):
                document_id = self.store.add_document(
                    tenant, f"probe://{tenant}/{part}", b"probe", chunks[start:start + 1000])
                self.document_ids.setdefault(tenant, document_id)
            with self.db.tenant_session(tenant) as conn:
                self.chunk_ids[tenant] = [int(r[0]) for r in conn.execute(
                    "SELECT chunk_id FROM rag.chunks WHERE tenant_id = %s", [tenant])]
        self._promote_large(admin_url)
        self.report.setup_s = round(time.perf_counter() - started, 3)

    def _promote_large(self, admin_url: str) -> None:
        threshold = self.settings.retrieval.own_partition_min_rows
        with psycopg.connect(admin_url, autocommit=True,
                             **pooler_options(self.settings.db_pooler)) as conn:
            partitions = TenantPartitions(conn, self.settings.retrieval)
            for tenant in self.tenants:
                if self.size_of[tenant] >= threshold:
                    partitions.promote(tenant, graph_params_for(conn, self.size_of[tenant]))
                    self.promoted.append(tenant)
                    self.report.promoted_sizes.append(self.size_of[tenant])

    def teardown(self) -> None:
        admin_url = resolve_targets(self.settings).admin_url
        with psycopg.connect(admin_url, autocommit=True,
                             **pooler_options(self.settings.db_pooler)) as conn:
            for tenant in self.tenants:
                tenant_admin.delete_tenant(conn, tenant)

    # --- the probe loop --------------------------------------------------------------------
    def run(self, probes: int) -> ProbeReport:
        kinds: list[tuple[str, Callable[[], None]]] = [
            ("search_own", self._search_own), ("search_store", self._search_store),
            ("search_other_tenant", self._search_other_tenant),
            ("raw_select", self._raw_select), ("unset_tenant", self._unset_tenant),
            ("forged_tenant", self._forged_tenant), ("injection_id", self._injection_id),
            ("write_foreign", self._write_foreign),
            ("partition_direct", self._partition_direct),
        ]
        weights = [30, 15, 10, 15, 5, 5, 5, 15, 5]
        started = time.perf_counter()
        for _ in range(probes):
            name, probe = self.rng.choices(kinds, weights)[0]
            self.report.kinds[name] += 1
            probe()
            self.report.probes += 1
        self.report.elapsed_s = round(time.perf_counter() - started, 3)
        return self.report

    def _random_tenant(self) -> TenantId:
        return self.rng.choice(self.tenants)

    def _query(self) -> Vector:
        return Vector(self.np_rng.standard_normal(DIMENSION).astype(np.float32))

    def _exact_max(self) -> int:
        # Half the searches force the HNSW (iterative scan) plan even for small tenants.
        return self.rng.choice([0, self.settings.exact_search_max_rows])

    def _search_own(self) -> None:
        tenant = self._random_tenant()
        k = self.rng.randint(1, 20)
        with self.db.tenant_session(tenant) as conn:
            rows = conn.execute(_RAW_SEARCH, [tenant, PROBE_MODEL_KEY, self._query(), k,
                                              max(40, k), self._exact_max()]).fetchall()
        self.report.searches += 1
        self.report.plans.update(row[2] for row in rows[:1])
        for chunk_id, row_tenant, _plan in rows:
            if row_tenant != tenant:
                self.report.leak(f"search_own: {tenant} got chunk {chunk_id} of {row_tenant}")
        if len(rows) < min(k, self.size_of[tenant]):
            self.report.short_results += 1

    def _search_store(self) -> None:
        tenant = self._random_tenant()
        k = self.rng.randint(1, 20)
        try:
            results = self.store.search(tenant, self.np_rng.standard_normal(DIMENSION)
                                        .astype(np.float32), k)
        except CrossTenantLeakError as exc:
            self.report.leak(f"search_store: {exc}")
            return
        self.report.searches += 1
        self.report.plans.update(r.plan for r in results[:1])
        if len(results) < min(k, self.size_of[tenant]):
            self.report.short_results += 1

    def _search_other_tenant(self) -> None:
        session_tenant, target = self.rng.sample(self.tenants, 2)
        try:
            with self.db.tenant_session(session_tenant) as conn:
                rows = conn.execute(_RAW_SEARCH, [target, PROBE_MODEL_KEY, self._query(), 10,
                                                  40, self._exact_max()]).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            self.report.refused_searches += 1
            return
        for chunk_id, row_tenant, _plan in rows:
            if row_tenant != session_tenant:
                self.report.leak(f"search_other: {session_tenant} got {chunk_id} of {row_tenant}")

    def _raw_select(self) -> None:
        tenant = self._random_tenant()
        table = self.rng.choice(TENANT_TABLES)
        with self.db.tenant_session(tenant) as conn:
            rows = conn.execute(f"SELECT tenant_id FROM rag.{table}").fetchall()  # noqa: S608
        for (row_tenant,) in rows:
            if row_tenant != tenant:
                self.report.leak(f"raw_select {table}: {tenant} saw a row of {row_tenant}")

    def _partition_direct(self) -> None:
        """A partition read directly, bypassing the parent: refused to the application role
        (it has no privilege on any partition)."""
        tenant = self._random_tenant()
        table = (partition_name(self.rng.choice(self.promoted))
                 if self.promoted and self.rng.random() < 0.5 else "chunk_embeddings_shared")
        try:
            with self.db.tenant_session(tenant) as conn:
                rows = conn.execute(f"SELECT tenant_id FROM rag.{table}").fetchall()  # noqa: S608
        except psycopg.errors.InsufficientPrivilege:
            self.report.refused_partition_reads += 1
            return
        for (row_tenant,) in rows:
            if row_tenant != tenant:
                self.report.leak(f"partition {table}: {tenant} saw a row of {row_tenant}")

    def _count_visible(self, conn: Connection) -> int:
        total = 0
        for table in TENANT_TABLES:
            row = conn.execute(f"SELECT count(*) FROM rag.{table}").fetchone()  # noqa: S608
            total += int(row[0]) if row else 0
        return total

    def _unset_tenant(self) -> None:
        with self.db.unscoped_session() as conn:
            visible = self._count_visible(conn)
        if visible:
            self.report.leak(f"unset tenant saw {visible} rows")
        try:
            with self.db.unscoped_session() as conn:
                rows = conn.execute(_RAW_SEARCH, [self._random_tenant(), PROBE_MODEL_KEY,
                                                  self._query(), 5, 40, 10_000]).fetchall()
            if rows:
                self.report.leak(f"unset tenant search returned {len(rows)} rows")
        except psycopg.errors.InsufficientPrivilege:
            self.report.refused_searches += 1

    def _forged_tenant(self) -> None:
        forged = new_tenant_id()  # well formed, exists nowhere
        with self.db.tenant_session(forged) as conn:
            visible = self._count_visible(conn)
        if visible:
            self.report.leak(f"forged tenant {forged} saw {visible} rows")

    def _injection_id(self) -> None:
        attack = self.rng.choice(INJECTION_IDS)
        try:
            parse_tenant_id(attack)
        except InvalidTenantIdError:
            self.report.rejected_ids += 1
        else:
            self.report.leak(f"malformed tenant id accepted: {attack!r}")
        # Even if validation were bypassed, the raw setting must match nothing.
        with self.db.unscoped_session() as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)",
                         [attack.replace("\x00", "")])
            visible = self._count_visible(conn)
        if visible:
            self.report.leak(f"raw tenant setting {attack!r} saw {visible} rows")

    def _write_foreign(self) -> None:
        attacker, victim = self.rng.sample(self.tenants, 2)
        victim_chunk = self.rng.choice(self.chunk_ids[victim])
        own_chunk = self.rng.choice(self.chunk_ids[attacker])
        attempts: list[tuple[str, str, list[Any]]] = [
            ("insert chunk for victim",
             "INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, token_count, "
             "content_hash) VALUES (%s, %s, 1000000, 'forged', 1, '\\x00')",
             [victim, self.document_ids[victim]]),
            ("update victim chunk", "UPDATE rag.chunks SET text = 'pwned' WHERE chunk_id = %s",
             [victim_chunk]),
            ("move own chunk to victim",
             "UPDATE rag.chunks SET tenant_id = %s WHERE chunk_id = %s", [victim, own_chunk]),
            ("delete victim chunk", "DELETE FROM rag.chunk_embeddings WHERE chunk_id = %s",
             [victim_chunk]),
            ("delete victim rows by tenant", "DELETE FROM rag.chunks WHERE tenant_id = %s",
             [victim]),
            ("create tenant", "INSERT INTO rag.tenants (tenant_id) VALUES (%s)",
             [new_tenant_id()]),
            ("forge audit row", "INSERT INTO rag.audit_log (tenant_id, request_id, kind) "
             "VALUES (%s, gen_random_uuid(), 'query')", [victim]),
            ("bump victim corpus version",
             "UPDATE rag.tenants SET corpus_version = corpus_version + 1 WHERE tenant_id = %s",
             [victim]),
        ]
        description, statement, params = self.rng.choice(attempts)
        self.report.write_attempts += 1
        try:
            with self.db.tenant_session(attacker) as conn:
                cur = conn.execute(statement, params)
                affected = cur.rowcount
                raise _Rollback
        except _Rollback:
            if affected > 0:
                self.report.leak(f"write took effect: {description} ({affected} rows)")
            else:
                self.report.refused_writes += 1  # RLS hid the victim's rows
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.CheckViolation):
            self.report.refused_writes += 1  # RLS WITH CHECK or missing privilege


def run_isolation_probe(settings: Settings, db: Database, probes: int, seed: int = 0,
                        sizes: Sequence[int] = DEFAULT_SIZES) -> ProbeReport:
    """Set up probe tenants, run ``probes`` probes, delete the tenants, return the report."""
    probe = IsolationProbe(settings, db, seed=seed, sizes=sizes)
    try:
        probe.setup()
        return probe.run(probes)
    finally:
        probe.teardown()
