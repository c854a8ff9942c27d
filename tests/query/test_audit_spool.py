"""The audit spool: rows written while the database is away reach it exactly once, whatever
else happens (a writer SIGKILLed mid-line, two flushers at once, rows appended during a
flush), keep the storage mode they were written under, and carry a keyed question hash.

Every case runs against a real PostgreSQL database of its own (the tests revoke the app
role's INSERT on the audit log to make the database refuse) and real processes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.codes import ErrorCode
from rag_core.common.metrics import AUDIT_SPOOL_QUARANTINED, counter_value
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform, audit_hash_key, session_key
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import ConfigurationError, DatabaseError
from rag_core.ops import services
from rag_core.query.audit import AuditLog, AuditRecord
from rag_core.query.audit_spool import JsonlSpool
from rag_core.redis.embedded import EmbeddedRedis
from tests.cli.test_failures import RAG, assert_one_line_failure
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment

KEY = secrets.token_hex(32)

# A child process that spools audit rows through the product's own wiring (Platform from the
# environment) and prints the request ids of each batch once `spool` has returned.
_CHILD = textwrap.dedent("""
    import json, sys, uuid
    from pathlib import Path
    from rag_core.composition import Platform
    from rag_core.config import get_settings
    from rag_core.query.audit import AuditRecord

    role, tenant = sys.argv[1], sys.argv[2]
    with Platform(get_settings(), start_services=False) as platform:
        audit = platform.audit_log
        if role == "flusher":
            stop, flushed = Path(sys.argv[3]), 0
            print("ready", flush=True)
            while not stop.exists():
                flushed += audit.flush_spool().flushed
            flushed += audit.flush_spool().flushed
            print(json.dumps({"flushed": flushed}), flush=True)
        else:
            batches = int(sys.argv[3])  # 0: until killed
            done = 0
            while batches == 0 or done < batches:
                batch = str(uuid.uuid4())
                records = [AuditRecord(tenant_id=tenant, kind="batch", request_id=batch,
                                       batch_id=batch)]
                records += [AuditRecord(tenant_id=tenant, kind="sub_query", batch_id=batch,
                                        parent_request_id=batch,
                                        question_redacted="a spooled question " * 20)
                            for _ in range(2)]
                audit.spool(records)
                print(" ".join(r.request_id for r in records), flush=True)
                done += 1
""")


@pytest.fixture(scope="module")
def spool_database(create_database: Callable[[str], Settings]) -> Iterator[Settings]:
    """A migrated database of this module's own: revoking INSERT here touches no one else."""
    fresh = create_database("spool")
    services.upgrade_database(fresh)
    yield fresh


@pytest.fixture(scope="module")
def spool_db(spool_database: Settings) -> Iterator[Database]:
    with services.open_database(spool_database) as database:
        yield database


@pytest.fixture(scope="module")
def tenant(spool_database: Settings) -> TenantId:
    with psycopg.connect(resolve_targets(spool_database).admin_url, autocommit=True) as conn:
        return tenant_admin.create_tenant(conn, display_name="spool tests")


@pytest.fixture()
def spool_settings(spool_database: Settings, tmp_path: Path) -> Settings:
    return spool_database.model_copy(update={
        "audit_spool_dir": tmp_path / "spool", "audit_hash_key": SecretStr(KEY),
        "redis_key_prefix": f"t{secrets.token_hex(4)}"})


@pytest.fixture()
def refusing_inserts(spool_database: Settings) -> Iterator[None]:
    """The database is up but refuses audit inserts (as it does for a role misconfigured)."""
    with psycopg.connect(resolve_targets(spool_database).admin_url, autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON rag.audit_log FROM rag_app")
        try:
            yield
        finally:
            conn.execute("GRANT INSERT ON rag.audit_log TO rag_app")


def _audit(settings: Settings, db: Database, **overrides: Any) -> AuditLog:
    values: dict[str, Any] = {"store_question": "redacted", "hash_key": KEY.encode()}
    values.update(overrides)
    assert settings.audit_spool_dir is not None
    return AuditLog(db, settings.audit_spool_dir, **values)


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


def _stored(settings: Settings, request_id: str) -> tuple[str | None, str | None]:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        row = conn.execute("SELECT question_redacted, question_hash FROM rag.audit_log "
                           "WHERE request_id = %s", [request_id]).fetchone()
    assert row is not None, request_id
    return row[0], row[1]


def _child(settings: Settings, *args: str) -> subprocess.Popen[str]:
    assert settings.audit_spool_dir is not None
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                          RAG_EMBEDDED_DATABASE=settings.embedded_database,
                          RAG_AUDIT_SPOOL_DIR=str(settings.audit_spool_dir),
                          RAG_AUDIT_HASH_KEY=KEY)
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)


def _hmac(text: str, key: str = KEY) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


# --- (a) a writer SIGKILLed while spooling ----------------------------------------------------
def test_a_writer_killed_while_spooling_loses_no_returned_row_and_its_torn_tail_is_quarantined(
        spool_settings: Settings, spool_db: Database, tenant: TenantId) -> None:
    returned: list[str] = []
    with _child(spool_settings, "appender", tenant, "0") as child:
        assert child.stdout is not None
        for line in child.stdout:  # each line: the ids of one batch whose append returned
            returned += line.split()
            if len(returned) >= 300:
                break
        child.send_signal(signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
    spool = spool_settings.audit_spool_dir
    assert spool is not None
    assert spool.stat().st_mode & 0o777 == 0o700
    files = list(spool.glob("audit-*.jsonl"))
    assert [f.stat().st_mode & 0o777 for f in files] == [0o600]
    # The kill may or may not have cut a line; make sure one is cut, as a kill mid-write does.
    with files[0].open("ab") as handle:
        handle.write(b'{"v": 1, "question_storage": "redacted", "record": {"tenant_')
    before = counter_value(AUDIT_SPOOL_QUARANTINED)

    report = _audit(spool_settings, spool_db).flush_spool()

    landed = _landed(spool_settings, returned)
    assert set(landed) == set(returned) and set(landed.values()) == {1}
    assert report.quarantined >= 1 and report.waiting == 0
    assert report.flushed >= len(returned)
    assert counter_value(AUDIT_SPOOL_QUARANTINED) == before + report.quarantined
    quarantined = list((spool / "quarantine").glob("*.lines"))
    assert len(quarantined) == 1 and quarantined[0].stat().st_mode & 0o777 == 0o600
    assert quarantined[0].read_bytes().endswith(b'"record": {"tenant_\n')
    assert list(spool.glob("audit-*")) == []


# --- (b) two flushers at once, a third process appending --------------------------------------
@pytest.mark.slow
def test_two_processes_flushing_while_a_third_appends_land_every_row_exactly_once(
        spool_settings: Settings, tenant: TenantId, spool_db: Database,
        tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    flushers = [_child(spool_settings, "flusher", tenant, str(stop)) for _ in range(2)]
    for flusher in flushers:  # both flush in a loop before the first row is appended
        assert flusher.stdout is not None and flusher.stdout.readline().strip() == "ready"
    appender = _child(spool_settings, "appender", tenant, "150")
    out, err = appender.communicate(timeout=300)
    assert appender.returncode == 0, err
    appended = out.split()
    stop.touch()
    delivered = 0
    for flusher in flushers:
        out, err = flusher.communicate(timeout=300)
        assert flusher.returncode == 0, err
        delivered += json.loads(out.strip().splitlines()[-1])["flushed"]
    last = _audit(spool_settings, spool_db).flush_spool()

    landed = _landed(spool_settings, appended)
    assert len(appended) == 450
    assert set(landed) == set(appended) and set(landed.values()) == {1}
    # No file was delivered twice, none skipped: the claims split the rows between flushers.
    assert delivered + last.flushed == len(appended)
    assert (last.quarantined, last.waiting) == (0, 0)


# --- (c) rows appended during a flush ---------------------------------------------------------
def test_rows_appended_while_a_flush_delivers_are_kept_for_the_next_flush(
        tmp_path: Path) -> None:
    spool = JsonlSpool(tmp_path / "spool")
    spool.append([{"n": 1}, {"n": 2}, {"n": 3}])
    delivered: list[dict[str, Any]] = []

    def deliver_while_another_writer_appends(objects: list[dict[str, Any]]) -> list[Any]:
        spool.append([{"n": 4}, {"n": 5}])  # between this flush's read and its unlink
        delivered.extend(objects)
        return []

    first = spool.drain(deliver_while_another_writer_appends)
    assert (first.flushed, first.waiting) == (3, 2)
    second = spool.drain(lambda objects: delivered.extend(objects) or [])
    assert (second.flushed, second.waiting) == (2, 0)
    assert [o["n"] for o in delivered] == [1, 2, 3, 4, 5]


def test_a_file_left_claimed_by_a_crashed_flusher_is_taken_by_the_next_one(
        spool_settings: Settings, spool_db: Database, tenant: TenantId) -> None:
    audit = _audit(spool_settings, spool_db)
    records = _records(tenant, 3)
    audit.spool(records)
    spool = spool_settings.audit_spool_dir
    assert spool is not None
    # A flusher that claimed the file, inserted one row and died before the unlink.
    (pending,) = spool.glob("audit-*.jsonl")
    pending.rename(pending.with_name(f"{pending.stem}.deadbeef.flushing"))
    audit.write(records[:1])

    report = audit.flush_spool()

    assert (report.flushed, report.quarantined, report.waiting) == (3, 0, 0)
    landed = _landed(spool_settings, [r.request_id for r in records])
    assert set(landed.values()) == {1} and len(landed) == 3


def test_a_flush_while_the_database_refuses_keeps_every_row(
        spool_settings: Settings, spool_db: Database, tenant: TenantId,
        refusing_inserts: None) -> None:
    audit = _audit(spool_settings, spool_db)
    records = _records(tenant, 2)
    assert audit.write(records) is False  # spooled
    with pytest.raises(DatabaseError) as refused:
        audit.flush_spool()
    assert refused.value.code == ErrorCode.DATABASE_ERROR
    assert audit.spooled() == 2
    assert _landed(spool_settings, [r.request_id for r in records]) == Counter()


# --- (d) the storage mode travels with the row ------------------------------------------------
def test_a_row_spooled_under_hash_never_lands_with_its_text(
        spool_settings: Settings, spool_db: Database, tenant: TenantId) -> None:
    secret = "does my neighbour's biopsy show cancer?"
    hashed = _records(tenant, 1, secret)
    _audit(spool_settings, spool_db, store_question="hash").spool(hashed)
    spool = spool_settings.audit_spool_dir
    assert spool is not None
    assert all(secret.encode() not in f.read_bytes() for f in spool.glob("audit-*"))
    redacted = _records(tenant, 1, "kept as text?")
    _audit(spool_settings, spool_db, store_question="redacted").spool(redacted)
    # A line that claims "hash" but carries text (edited, or written by a buggy version).
    forged = AuditRecord(tenant_id=tenant, kind="query", question_redacted=secret)
    (spool / "audit-1.jsonl").write_text(json.dumps({
        "v": 1, "question_storage": "hash", "question_hash": _hmac(secret),
        "record": forged.__dict__}) + "\n")

    # Flushed by processes configured the other way round.
    _audit(spool_settings, spool_db, store_question="redacted").flush_spool()

    assert _stored(spool_settings, hashed[0].request_id) == (None, _hmac(secret))
    assert _stored(spool_settings, forged.request_id) == (None, _hmac(secret))
    assert _stored(spool_settings, redacted[0].request_id) == \
        ("kept as text?", _hmac("kept as text?"))


def test_a_line_spooled_by_the_previous_version_is_replayed_hash_only(
        spool_settings: Settings, spool_db: Database, tenant: TenantId) -> None:
    """Before lines were versioned the spool held bare records: an upgrade must not strand
    them in quarantine. Which storage mode wrote them is unknown, so they land hash-only."""
    old = AuditRecord(tenant_id=tenant, kind="query", question_redacted="an old question?")
    spool = spool_settings.audit_spool_dir
    assert spool is not None
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "audit-7.jsonl").write_text(json.dumps(old.__dict__) + "\n")

    done = _audit(spool_settings, spool_db).flush_spool()

    assert (done.flushed, done.quarantined) == (1, 0)
    assert _stored(spool_settings, old.request_id) == (None, _hmac("an old question?"))


# --- (e) the keyed question hash -------------------------------------------------------------
def test_the_question_hash_is_keyed(spool_settings: Settings, spool_db: Database,
                                    tenant: TenantId) -> None:
    question = "is it cancer?"
    other_key = secrets.token_hex(32)
    first, second = _records(tenant, 1, question), _records(tenant, 1, question)
    assert _audit(spool_settings, spool_db).write(first)
    assert _audit(spool_settings, spool_db, hash_key=other_key.encode()).write(second)
    _, one = _stored(spool_settings, first[0].request_id)
    _, two = _stored(spool_settings, second[0].request_id)
    assert one != two
    assert one != hashlib.sha256(question.encode()).hexdigest()
    assert (one, two) == (_hmac(question), _hmac(question, other_key))


def test_the_audit_key_is_kept_in_the_state_folder_unless_configured(
        spool_settings: Settings, tmp_path: Path) -> None:
    unset = spool_settings.model_copy(update={"audit_hash_key": None,
                                              "state_dir": tmp_path / "state"})
    key = audit_hash_key(unset)
    assert audit_hash_key(unset) == key and len(key) >= 32
    assert key != session_key(unset)
    assert (tmp_path / "state" / "audit_hash.key").stat().st_mode & 0o777 == 0o600
    assert audit_hash_key(spool_settings) == KEY.encode()
    short = spool_settings.model_copy(update={"audit_hash_key": SecretStr("too short")})
    with pytest.raises(ConfigurationError, match="RAG_AUDIT_HASH_KEY") as refused:
        audit_hash_key(short)
    assert "too short" not in str(refused.value)


# --- (f) every process that audits flushes at start -----------------------------------------
def test_building_the_query_service_flushes_a_waiting_spool(
        spool_settings: Settings, spool_db: Database, tenant: TenantId, embedder: Embedder,
        redis_server: EmbeddedRedis) -> None:
    records = _records(tenant, 2)
    _audit(spool_settings, spool_db).spool(records)
    with Platform(spool_settings, database=spool_db, embedder=embedder,
                  redis_url=redis_server.url()) as platform:
        assert platform.query_service is not None
        assert platform.audit_log.spooled() == 0
    assert set(_landed(spool_settings, [r.request_id for r in records]).values()) == {1}


def test_a_database_that_refuses_at_start_keeps_the_spool_and_not_the_process_down(
        spool_settings: Settings, spool_db: Database, tenant: TenantId, embedder: Embedder,
        redis_server: EmbeddedRedis, refusing_inserts: None) -> None:
    _audit(spool_settings, spool_db).spool(_records(tenant, 2))
    with Platform(spool_settings, database=spool_db, embedder=embedder,
                  redis_url=redis_server.url()) as platform:
        assert platform.query_service is not None
        assert platform.audit_log.spooled() == 2


# --- (g) rag audit flush --json --------------------------------------------------------------
def _rag_audit_flush(settings: Settings) -> subprocess.CompletedProcess[str]:
    assert settings.audit_spool_dir is not None
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                          RAG_EMBEDDED_DATABASE=settings.embedded_database,
                          RAG_AUDIT_SPOOL_DIR=str(settings.audit_spool_dir),
                          RAG_AUDIT_HASH_KEY=KEY)
    return subprocess.run([*RAG, "audit", "flush", "--json"], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=300, check=False)


@pytest.mark.slow
def test_rag_audit_flush_prints_what_it_did(spool_settings: Settings, spool_db: Database,
                                            tenant: TenantId) -> None:
    records = _records(tenant, 2)
    _audit(spool_settings, spool_db).spool(records)
    spool = spool_settings.audit_spool_dir
    assert spool is not None
    (spool / f"audit-{uuid.uuid4().int % 10**6}.jsonl").write_bytes(b'{"v": 1, "quest')

    result = _rag_audit_flush(spool_settings)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == \
        {"flushed": 2, "quarantined": 1, "waiting": 0}
    assert set(_landed(spool_settings, [r.request_id for r in records]).values()) == {1}


@pytest.mark.slow
def test_rag_audit_flush_while_the_database_refuses_fails_in_one_line_and_keeps_the_rows(
        spool_settings: Settings, spool_db: Database, tenant: TenantId,
        refusing_inserts: None) -> None:
    audit = _audit(spool_settings, spool_db)
    audit.spool(_records(tenant, 2))
    result = _rag_audit_flush(spool_settings)
    assert_one_line_failure(result, ErrorCode.DATABASE_ERROR)
    assert audit.spooled() == 2


def test_spool_files_are_private_even_under_a_wide_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        spool = JsonlSpool(tmp_path / "spool")
        spool.append([{"n": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "spool").iterdir()} == \
        {".lock": 0o600, f"audit-{os.getpid()}.jsonl": 0o600}
