"""The buffered audit writer of a serving process: every row handed to ``write`` reaches
rag.audit_log exactly once, without a database round trip on the hot path, through
concurrent writers, a database that refuses or is stopped, a process SIGKILLed before its
writer flushed, and a writer thread that died.

Real PostgreSQL (a database of this module's own, since a test revokes the app role's
INSERT; a private server for the test that stops it), real processes, real files. Waiting
for the writer thread is a bounded poll of the database, never a sleep that hopes.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.common.metrics import REGISTRY, counter_value
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ops import services
from rag_core.query.audit import AUDIT_SPOOLED, AuditLog, AuditRecord
from rag_core.query.audit_writer import AUDIT_WRITER_RESTARTS, BufferedAuditLog
from rag_core.redis.embedded import EmbeddedRedis
from tests.cli.test_failures import RAG
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment

KEY = secrets.token_hex(32)

# A serving process that audits through the product's wiring, says so once write() has
# returned, and waits to be killed: its writer's interval is far longer than the test.
_CHILD = textwrap.dedent("""
    import sys, time
    from rag_core.composition import Platform
    from rag_core.config import get_settings
    from rag_core.query.audit import AuditRecord

    tenant, count = sys.argv[1], int(sys.argv[2])
    platform = Platform(get_settings(), start_services=False, serving=True)
    writer = platform.buffered_audit_log
    records = [AuditRecord(tenant_id=tenant, kind="query", question_redacted="killed?")
               for _ in range(count)]
    for record in records:
        writer.write([record])
    print(" ".join(r.request_id for r in records), flush=True)
    print("written", flush=True)
    time.sleep(600)
""")


@pytest.fixture(scope="module")
def writer_database(create_database: Callable[[str], Settings]) -> Settings:
    fresh = create_database("writer")
    services.upgrade_database(fresh)
    return fresh


@pytest.fixture(scope="module")
def writer_db(writer_database: Settings) -> Iterator[Database]:
    with services.open_database(writer_database) as database:
        yield database


@pytest.fixture(scope="module")
def tenant(writer_database: Settings) -> TenantId:
    with psycopg.connect(resolve_targets(writer_database).admin_url, autocommit=True) as conn:
        return tenant_admin.create_tenant(conn, display_name="writer tests")


@pytest.fixture()
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@contextmanager
def _refusing_inserts(settings: Settings) -> Iterator[None]:
    """The database is up but refuses audit inserts until the block ends."""
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON rag.audit_log FROM rag_app")
        try:
            yield
        finally:
            conn.execute("GRANT INSERT ON rag.audit_log TO rag_app")


@contextmanager
def _writer(db: Database, spool: Path, *, interval: float = 0.02, rows: int = 50,
            storage: Any = "redacted") -> Iterator[BufferedAuditLog]:
    writer = BufferedAuditLog(AuditLog(db, spool, storage, hash_key=KEY.encode()),
                              flush_interval_s=interval, flush_rows=rows)
    try:
        yield writer
    finally:
        writer.close()


def _records(tenant: TenantId, count: int, question: str = "a question?") -> list[AuditRecord]:
    return [AuditRecord(tenant_id=tenant, kind="query", question_redacted=question)
            for _ in range(count)]


def _landed(settings: Settings, request_ids: list[str]) -> Counter[str]:
    """How many rows each request id has in rag.audit_log (read as the admin: no RLS)."""
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        rows = conn.execute("SELECT request_id::text, count(*) FROM rag.audit_log "
                            "WHERE request_id = ANY(%s::uuid[]) GROUP BY 1",
                            [request_ids]).fetchall()
    return Counter({str(r[0]): int(r[1]) for r in rows})


def _eventually(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Poll ``check`` until it holds (the writer thread runs on its own clock); a bound
    turns a writer that never delivers into a failure instead of a hang."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)


def _all_landed_once(settings: Settings, ids: list[str]) -> bool:
    landed = _landed(settings, ids)
    assert set(landed.values()) <= {1}, "a row landed twice"
    return len(landed) == len(ids)


def _spooled_ids(spool: Path) -> list[str]:
    """Request ids of every line waiting in the spool's files, pending or claimed."""
    ids: list[str] = []
    for path in spool.glob("audit-*"):
        for line in path.read_bytes().splitlines():
            if line.strip():
                ids.append(json.loads(line)["record"]["request_id"])
    return ids


def _requests(db: Database) -> int:
    """Connections ever asked of the pool (every database round trip asks for one)."""
    return int(db.pool.get_stats().get("requests_num", 0))


# --- the path of a row ------------------------------------------------------------------------
def test_rows_written_through_the_buffered_log_land_in_the_audit_log(
        writer_database: Settings, writer_db: Database, tenant: TenantId,
        spool_dir: Path) -> None:
    redacted, hashed = _records(tenant, 3), _records(tenant, 2, "hash me?")
    with _writer(writer_db, spool_dir) as writer, \
            _writer(writer_db, spool_dir, storage="hash") as hashing:
        writer.write(redacted)
        hashing.write(hashed)
        ids = [r.request_id for r in redacted + hashed]
        _eventually(lambda: _all_landed_once(writer_database, ids), "rows landed")
        _eventually(lambda: writer.pending() == 0 and hashing.pending() == 0, "none pending")
        assert (writer.stats().written, hashing.stats().written) == (3, 2)
    with psycopg.connect(resolve_targets(writer_database).admin_url) as conn:
        stored = conn.execute("SELECT question_redacted, question_hash IS NOT NULL FROM "
                              "rag.audit_log WHERE request_id = ANY(%s::uuid[])",
                              [[r.request_id for r in hashed]]).fetchall()
    assert stored == [(None, True)] * 2  # the writer keeps the storage mode it was given
    assert list(spool_dir.glob("audit-*")) == []


def test_the_hot_path_makes_no_database_round_trip_and_close_flushes(
        writer_database: Settings, tenant: TenantId, spool_dir: Path) -> None:
    records = _records(tenant, 400)
    with services.open_database(writer_database) as own_db:
        writer = BufferedAuditLog(AuditLog(own_db, spool_dir, hash_key=KEY.encode()),
                                  flush_interval_s=60, flush_rows=100_000)
        before = _requests(own_db)
        threads = [threading.Thread(target=lambda part=part: [
            writer.write([r]) for r in records[part::4]]) for part in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert _requests(own_db) == before  # 400 writes, not one connection asked for
        assert sorted(_spooled_ids(spool_dir)) == sorted(r.request_id for r in records)
        assert writer.pending() == 400 and writer.stats().alive
        writer.close()  # the final flush
        assert writer.stats().written == 400 and writer.pending() == 0
    assert _all_landed_once(writer_database, [r.request_id for r in records])
    assert list(spool_dir.glob("audit-*")) == []


def test_other_flushes_leave_a_live_writers_segment_to_it(
        writer_database: Settings, writer_db: Database, tenant: TenantId,
        spool_dir: Path) -> None:
    records = _records(tenant, 5)
    direct = AuditLog(writer_db, spool_dir, hash_key=KEY.encode())
    with _writer(writer_db, spool_dir, interval=60, rows=100_000) as writer:
        writer.write(records)
        report = direct.flush_spool()  # what `rag audit flush` / the flow / a start-up do
        assert (report.flushed, report.waiting) == (0, 5)
        assert len(list(spool_dir.glob("audit-*.jsonl"))) == 1
    assert _all_landed_once(writer_database, [r.request_id for r in records])


def test_many_threads_writing_while_another_flusher_runs_land_every_row_exactly_once(
        writer_database: Settings, writer_db: Database, tenant: TenantId,
        spool_dir: Path) -> None:
    per_thread, threads_n = 150, 8
    written: list[list[str]] = [[] for _ in range(threads_n)]
    stop = threading.Event()
    direct = AuditLog(writer_db, spool_dir, hash_key=KEY.encode())

    def flush_meanwhile() -> None:  # the flush-audit-spool flow, looping
        while not stop.is_set():
            direct.flush_spool()

    with _writer(writer_db, spool_dir, interval=0.01, rows=40) as writer:

        def write(slot: int) -> None:
            for n in range(per_thread):
                batch = _records(tenant, 1 + n % 3)
                writer.write(batch)
                written[slot].extend(r.request_id for r in batch)

        flusher = threading.Thread(target=flush_meanwhile)
        flusher.start()
        threads = [threading.Thread(target=write, args=(i,)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = [rid for part in written for rid in part]
        try:
            _eventually(lambda: _all_landed_once(writer_database, ids), "all rows landed")
        finally:
            stop.set()
            flusher.join()
        _eventually(lambda: writer.pending() == 0, "nothing pending")
    assert len(ids) == len(set(ids)) == threads_n * per_thread * 2
    assert list(spool_dir.glob("audit-*")) == []


# --- failures -------------------------------------------------------------------------------
def test_rows_wait_in_the_spool_while_the_database_refuses_and_land_when_it_accepts(
        writer_database: Settings, writer_db: Database, tenant: TenantId,
        spool_dir: Path) -> None:
    records = _records(tenant, 30)
    ids = [r.request_id for r in records]
    with _writer(writer_db, spool_dir, interval=0.02, rows=10) as writer:
        with _refusing_inserts(writer_database):
            for record in records:
                writer.write([record])
            _eventually(lambda: writer.stats().failures >= 2, "the writer retried")
            assert _landed(writer_database, ids) == Counter()
            assert sorted(_spooled_ids(spool_dir)) == sorted(ids)
            assert writer.pending() == 30 and writer.stats().alive
            assert list(spool_dir.glob("audit-*.flushing"))  # claimed, kept for the retry
        _eventually(lambda: _all_landed_once(writer_database, ids), "rows landed after")
        _eventually(lambda: writer.pending() == 0, "nothing pending")
    assert list(spool_dir.glob("audit-*")) == []


def test_a_dead_writer_thread_is_restarted_by_the_next_write(
        writer_database: Settings, writer_db: Database, tenant: TenantId,
        spool_dir: Path) -> None:
    first, second = _records(tenant, 3), _records(tenant, 3)
    restarts = counter_value(AUDIT_WRITER_RESTARTS)
    with _writer(writer_db, spool_dir) as writer:
        writer.write(first)
        _eventually(lambda: _all_landed_once(writer_database, [r.request_id for r in first]),
                    "first rows landed")

        def crash() -> None:  # a failure outside the per-flush guard: the thread ends
            raise RuntimeError("injected writer crash")

        writer._pause = crash  # type: ignore[method-assign]
        _eventually(lambda: not writer.stats().alive, "the writer thread died")
        del writer._pause  # the class's own pause again
        writer.write(second)
        stats = writer.stats()
        assert stats.alive and stats.restarts == 1
        assert counter_value(AUDIT_WRITER_RESTARTS) == restarts + 1
        ids = [r.request_id for r in first + second]
        _eventually(lambda: _all_landed_once(writer_database, ids), "rows landed")


def test_a_write_after_close_goes_to_the_spool(
        writer_database: Settings, writer_db: Database, tenant: TenantId,
        spool_dir: Path) -> None:
    late = _records(tenant, 2)
    with _writer(writer_db, spool_dir) as writer:
        writer.write(_records(tenant, 1))
    writer.write(late)
    assert sorted(_spooled_ids(spool_dir)) == sorted(r.request_id for r in late)
    assert AuditLog(writer_db, spool_dir, hash_key=KEY.encode()).flush_spool().flushed == 2
    assert _all_landed_once(writer_database, [r.request_id for r in late])


# --- a process killed before its writer flushed ------------------------------------------------
@pytest.mark.slow
def test_rows_of_a_process_killed_before_its_writer_flushed_land_once_after_a_flush(
        writer_database: Settings, tenant: TenantId, spool_dir: Path) -> None:
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                          RAG_EMBEDDED_DATABASE=writer_database.embedded_database,
                          RAG_AUDIT_SPOOL_DIR=str(spool_dir), RAG_AUDIT_HASH_KEY=KEY,
                          RAG_API__AUDIT_FLUSH_INTERVAL_S="60",
                          RAG_API__AUDIT_FLUSH_ROWS="100000")
    with subprocess.Popen([sys.executable, "-c", _CHILD, tenant, "50"], env=env,
                          cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None
        ids = child.stdout.readline().split()
        assert child.stdout.readline().strip() == "written", child.stderr
        child.send_signal(signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL and len(ids) == 50
    assert [p.name.startswith(f"audit-{child.pid}-") for p in spool_dir.glob("audit-*")] \
        == [True]
    assert sorted(_spooled_ids(spool_dir)) == sorted(ids)
    assert _landed(writer_database, ids) == Counter()

    flush = subprocess.run([*RAG, "audit", "flush", "--json"], capture_output=True, text=True,
                           env=env, cwd=REPO_ROOT, timeout=300, check=False)

    assert flush.returncode == 0, flush.stderr
    assert json.loads(flush.stdout.strip().splitlines()[-1]) == \
        {"flushed": 50, "quarantined": 0, "waiting": 0}
    assert _all_landed_once(writer_database, ids)


# --- the serving platform ---------------------------------------------------------------------
def test_a_serving_platform_audits_its_queries_through_the_buffered_log(
        writer_database: Settings, writer_db: Database, tenant: TenantId, embedder: Embedder,
        redis_server: EmbeddedRedis, spool_dir: Path) -> None:
    settings = writer_database.model_copy(update={
        "audit_spool_dir": spool_dir, "audit_hash_key": SecretStr(KEY),
        "redis_key_prefix": f"t{secrets.token_hex(4)}"})
    with Platform(settings, database=writer_db, embedder=embedder,
                  redis_url=redis_server.url()) as direct:
        assert direct.query_service.audit is direct.audit_log
    with Platform(settings, database=writer_db, embedder=embedder,
                  redis_url=redis_server.url(), serving=True) as serving:
        service = serving.query_service
        assert service.audit is serving.buffered_audit_log
        answer = service.ask(tenant, "Does vitamin D help?")
        _eventually(lambda: _all_landed_once(writer_database, [answer.request_id]),
                    "the query's audit row landed")
    assert not serving.buffered_audit_log.stats().alive  # closed with the platform


# --- a stopped database ------------------------------------------------------------------------
@pytest.mark.slow
def test_with_the_database_stopped_write_returns_and_the_rows_land_once_it_is_back(
        private_pg: tuple[EmbeddedPostgres, Settings], spool_dir: Path) -> None:
    server, settings = private_pg
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        stopped_tenant = tenant_admin.create_tenant(conn, display_name="stopped")
    # Short connect and acquire timeouts: each failed attempt costs the writer seconds.
    db = Database(resolve_targets(settings).app_url, connect_timeout_s=2.0,
                  acquire_timeout_s=2.0)
    records = _records(stopped_tenant, 200)
    ids = [r.request_id for r in records]
    spooled_before = counter_value(AUDIT_SPOOLED)
    try:
        with _writer(db, spool_dir, interval=0.05, rows=50) as writer:
            server.stop()
            try:
                for record in records:
                    writer.write([record])  # returns: no round trip, no exception
                assert sorted(_spooled_ids(spool_dir)) == sorted(ids)
                _eventually(lambda: writer.stats().failures >= 1, "the writer tried")
                assert writer.pending() == 200
            finally:
                server.start()
            _eventually(lambda: _all_landed_once(settings, ids), "rows landed")
            _eventually(lambda: writer.pending() == 0, "nothing pending")
        # The rows went by the writer, not by the direct log's spool-on-failure.
        assert counter_value(AUDIT_SPOOLED) == spooled_before
        assert list(spool_dir.glob("audit-*")) == []
    finally:
        db.close()


def test_the_writer_metrics_are_registered() -> None:
    names = {metric.name for metric in REGISTRY.collect()}
    assert {"rag_audit_writer_buffered_rows", "rag_audit_writer_rows_written",
            "rag_audit_writer_failures", "rag_audit_writer_restarts"} <= names
