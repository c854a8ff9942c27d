"""The RLS overhead measurement and its sampler, over the real test database: the product's
search timed with the policy in force and with only its explicit tenant filter, a policy made
expensive on purpose showing up in the difference, an admin subject to RLS refused, the
tenants visited in turn, and the sampler's metrics, lock and thread."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from rag_core.common.metrics import REGISTRY
from rag_core.common.tenancy import TenantId
from rag_core.config import ApiSettings, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Connection, Database
from rag_core.ops import services
from rag_core.ops.rls_overhead import (
    AdminConnections,
    RlsOverheadSample,
    measure_rls_overhead,
    next_tenant,
)
from rag_core.ops.rls_sampler import RlsSampler, lock_path, sampler_for, why_not_sampled
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore

ROWS = 60  # vectors of each populated tenant: exact search (under exact_search_max_rows)
K = 5


def _chunks(n: int, rng: np.random.Generator) -> list[ChunkToStore]:
    return [ChunkToStore(f"chunk {i}", 2, hashlib.sha256(f"{i}".encode()).digest(),
                         rng.standard_normal(384).astype(np.float32)) for i in range(n)]


class Private:
    """A migrated database of this module's own: two tenants with vectors, one without."""

    def __init__(self, settings: Settings, db: Database, populated: list[TenantId],
                 empty: TenantId) -> None:
        self.settings = settings
        self.db = db
        self.store = VectorStore(db, settings)
        self.populated = sorted(populated)
        self.empty = empty
        self.admin_url = resolve_targets(settings).admin_url

    @contextlib.contextmanager
    def admin(self) -> Iterator[Connection]:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            yield conn

    def measure(self, **options: Any) -> RlsOverheadSample | None:
        return measure_rls_overhead(self.db, self.admin, self.store, k=K, **options)


@pytest.fixture(scope="module")
def private(create_database: Callable[[str], Settings]) -> Iterator[Private]:
    settings = create_database("rls")
    services.upgrade_database(settings)
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        tenants = [tenant_admin.create_tenant(conn) for _ in range(3)]
    rng = np.random.default_rng(11)
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        for tenant in tenants[:2]:
            store.add_document(tenant, f"doc://{tenant}", b"d", _chunks(ROWS, rng))
        yield Private(settings, db, tenants[:2], tenants[2])


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_sample_times_the_same_search_both_ways(private: Private) -> None:
    tenant = private.populated[0]
    sample = private.measure(tenant=tenant, repeats=3)
    assert sample is not None and sample.tenant_id == tenant
    assert len(sample.enforced_ms) == len(sample.bypassed_ms) == 3
    assert all(ms > 0 for ms in (*sample.enforced_ms, *sample.bypassed_ms))
    # The policy and the explicit filter agree on the tenant's rows: the search's k.
    assert sample.rows_enforced == sample.rows_bypassed == K
    shown = sample.as_dict()
    assert shown["overhead_ms"] == pytest.approx(sample.overhead_s * 1000, abs=0.001)
    assert shown["rows_enforced"] == K


def test_an_expensive_policy_shows_in_the_difference(
        create_database: Callable[[str], Settings]) -> None:
    # A database of its own: its policy function is made slow (2 ms a call) and volatile, so
    # it is evaluated on every row the search reads instead of once as an index key. The
    # run without the policy calls it once (the search function's own tenant check); the
    # run with it, on each of the tenant's rows: the difference must show that cost.
    settings = create_database("rlsslow")
    services.upgrade_database(settings)
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn)
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        store.add_document(tenant, "doc://slow", b"d", _chunks(ROWS, np.random.default_rng(3)))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("""
                CREATE OR REPLACE FUNCTION rag.current_tenant_id() RETURNS text
                    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
                BEGIN
                    PERFORM pg_sleep(0.002);
                    RETURN nullif(current_setting('app.tenant_id', true), '');
                END $$""")

        @contextlib.contextmanager
        def admin() -> Iterator[Connection]:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                yield conn

        sample = measure_rls_overhead(db, admin, store, k=K, repeats=1, tenant=tenant)
    assert sample is not None and sample.rows_enforced == sample.rows_bypassed == K
    # At least one 2 ms call per stored row (60 rows: >= 120 ms), over the alert's 100 ms.
    assert sample.overhead_s > 0.1, sample.as_dict()


def test_an_admin_subject_to_rls_is_refused_rather_than_measured(private: Private) -> None:
    # The application role stands in for an admin that RLS applies to (a table owner under
    # FORCE): with row_security off, PostgreSQL refuses the query instead of applying the
    # policy, so no "without the policy" figure can secretly include it.
    app_url = resolve_targets(private.settings).app_url

    @contextlib.contextmanager
    def not_an_admin() -> Iterator[Connection]:
        with psycopg.connect(app_url, autocommit=True) as conn:
            yield conn

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        measure_rls_overhead(private.db, not_an_admin, private.store, k=K)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        measure_rls_overhead(private.db, not_an_admin, private.store, k=K,
                             tenant=private.populated[0])


def test_tenants_with_vectors_are_visited_in_turn(private: Private) -> None:
    first, second = private.populated
    with private.admin() as conn:
        assert next_tenant(conn, private.store.model_key) == first
        assert next_tenant(conn, private.store.model_key, after=first) == second
        assert next_tenant(conn, private.store.model_key, after=second) == first  # wraps
        assert next_tenant(conn, "no-such-model") is None
    sample = private.measure(after=first, repeats=1)
    assert sample is not None and sample.tenant_id == second
    assert private.empty not in private.populated  # a tenant without vectors is skipped


def test_the_sampler_exports_each_outcome_without_the_tenant(private: Private,
                                                             tmp_path: Path) -> None:
    seen: list[str] = []

    def measure(after: str) -> RlsOverheadSample | None:
        seen.append(after)
        return private.measure(after=after, repeats=1)

    sampler = RlsSampler(measure, interval_s=60, lock_path=tmp_path / "lock")
    ok, count = value("rag_rls_samples_total", outcome="ok"), \
        value("rag_rls_overhead_seconds_count")
    assert sampler.sample_once() == "ok"
    assert sampler.sample_once() == "ok"
    assert value("rag_rls_samples_total", outcome="ok") - ok == 2
    assert value("rag_rls_overhead_seconds_count") - count == 2
    assert seen == ["", private.populated[0]]  # the second sample moved to the next tenant
    assert sampler.last is not None and sampler.last.tenant_id == private.populated[1]
    for family in REGISTRY.collect():
        if family.name.startswith("rag_rls"):
            for sample in family.samples:
                assert set(sample.labels) <= {"outcome", "le"}
                assert not any(t in str(sample.labels) for t in private.populated)

    def broken(after: str) -> RlsOverheadSample | None:
        raise psycopg.OperationalError("server closed the connection")

    failed = value("rag_rls_samples_total", outcome="failed")
    assert RlsSampler(broken, interval_s=60, lock_path=tmp_path / "b").sample_once() == "failed"
    assert value("rag_rls_samples_total", outcome="failed") - failed == 1
    none = value("rag_rls_samples_total", outcome="no_tenant")
    assert RlsSampler(lambda after: None, interval_s=60,
                      lock_path=tmp_path / "n").sample_once() == "no_tenant"
    assert value("rag_rls_samples_total", outcome="no_tenant") - none == 1


def test_one_sampler_per_lock_and_the_next_takes_over(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "rls_sampler.lock"
    first = RlsSampler(lambda after: None, interval_s=60, lock_path=lock)
    second = RlsSampler(lambda after: None, interval_s=60, lock_path=lock)
    assert first.try_lock() and first.holds_lock
    assert not second.try_lock() and not second.holds_lock
    first.close()  # a worker that exits releases it (so does one that dies: flock)
    assert second.try_lock()
    second.close()


def test_the_thread_samples_while_holding_the_lock(private: Private, tmp_path: Path) -> None:
    sampled = threading.Event()

    def measure(after: str) -> RlsOverheadSample | None:
        sample = private.measure(after=after, repeats=1)
        sampled.set()
        return sample

    sampler = RlsSampler(measure, interval_s=0.05, lock_path=tmp_path / "lock")
    sampler.start()
    try:
        assert sampled.wait(timeout=60), "the sampler thread never sampled"
        assert sampler.holds_lock
    finally:
        sampler.close()
    assert not sampler.holds_lock


def test_where_a_process_may_sample(private: Private) -> None:
    base = private.settings
    assert why_not_sampled(base) is None
    off = base.model_copy(update={"api": ApiSettings(rls_sample_interval_s=0)})
    assert "INTERVAL" in (why_not_sampled(off) or "")
    runtime = base.model_copy(update={"runtime_only": True})
    assert "RUNTIME_ONLY" in (why_not_sampled(runtime) or "")
    app_only = base.model_copy(update={"app_database_url": "postgresql://x@127.0.0.1/db"})
    assert "RAG_APP_DATABASE_URL" in (why_not_sampled(app_only) or "")
    admin: AdminConnections = private.admin
    assert sampler_for(runtime, private.db, admin, private.store) is None
    built = sampler_for(base, private.db, admin, private.store)
    assert built is not None and built.interval_s == base.api.rls_sample_interval_s
    assert built.lock_path == lock_path(base) and built.lock_path.parent == base.state_dir
    # One lock per database: another embedded database, or an external server, has its own.
    other = base.model_copy(update={"embedded_database": "another"})
    external = base.model_copy(update={"database_url": "postgresql://a@db.internal:6543/rag"})
    assert len({lock_path(base), lock_path(other), lock_path(external)}) == 3
    with pytest.raises(ValueError):
        RlsSampler(lambda after: None, interval_s=0, lock_path=Path("unused"))
