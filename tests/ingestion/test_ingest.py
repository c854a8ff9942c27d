"""End-to-end ingestion against real PostgreSQL with the real embedding model: counts,
idempotence, versioning, rejections, crash recovery, restarts and concurrent workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.chunking import chunk_document
from rag_core.ingestion.jobs import list_rejections, plan_job, summarize
from rag_core.ingestion.runner import run_ingestion
from rag_core.ingestion.worker import WorkerPolicy
from rag_core.ops import services
from rag_core.retrieval.vector_store import VectorStore
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, make_settings
from tests.ingestion.conftest import scifact_records

SMALL_BATCHES = WorkerPolicy(claim_batch=2, embed_batch_size=16)


def snapshot(db: Database, tenant: TenantId) -> list[tuple[Any, ...]]:
    """The tenant's stored corpus, independent of generated ids."""
    with db.tenant_session(tenant) as conn:
        rows = conn.execute(
            "SELECT d.source_uri, d.version, d.is_current, c.ordinal, c.text, c.token_count, "
            "       e.embedding "
            "  FROM rag.documents d JOIN rag.chunks c USING (document_id) "
            "  JOIN rag.chunk_embeddings e USING (chunk_id) "
            " ORDER BY d.source_uri, d.version, c.ordinal").fetchall()
    return [(*r[:6], np.asarray(r[6].to_numpy())) for r in rows]


def assert_same_corpus(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> None:
    assert [r[:6] for r in left] == [r[:6] for r in right]
    for a, b in zip(left, right, strict=True):
        np.testing.assert_allclose(a[6], b[6], atol=1e-5)


def counts(db: Database, tenant: TenantId) -> dict[str, int]:
    with db.tenant_session(tenant) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM rag.documents), (SELECT count(*) FROM rag.chunks), "
            "(SELECT count(*) FROM rag.chunk_embeddings), "
            "(SELECT corpus_version FROM rag.tenants)").fetchone()
    assert row is not None
    return dict(zip(("documents", "chunks", "embeddings", "corpus_version"), row, strict=True))


def test_ingest_sample_then_reingest_inserts_nothing(
        db: Database, embedder: Embedder, store: VectorStore, make_tenant: Callable[[], TenantId],
        write_jsonl: Callable[..., Path]) -> None:
    tenant = make_tenant()
    records = scifact_records(25)
    source = write_jsonl(records)
    expected_chunks = sum(len(chunk_document(str(r["title"]), str(r["text"]),
                                             embedder.tokenizer)) for r in records)

    first = run_ingestion(db, embedder, store, tenant, source)
    assert first.summary.status == "succeeded"
    assert (first.summary.read, first.summary.ingested, first.summary.chunks) == \
        (25, 25, expected_chunks)
    assert first.summary.balanced
    after_first = counts(db, tenant)
    assert after_first["documents"] == 25
    assert after_first["chunks"] == after_first["embeddings"] == expected_chunks
    assert after_first["corpus_version"] >= 1

    again = run_ingestion(db, embedder, store, tenant, source)
    assert again.resumed is False
    assert (again.summary.ingested, again.summary.duplicate) == (0, 25)
    assert again.as_dict()["chunks_embedded"] == 0
    assert counts(db, tenant) == after_first  # 0 rows inserted, cache version unchanged

    hits = store.search(tenant, embedder.embed_queries([str(records[3]["title"])])[0], k=3)
    assert hits[0].document_id is not None and str(records[3]["title"]) in hits[0].text


def test_changed_document_becomes_a_new_version_atomically(
        db: Database, embedder: Embedder, store: VectorStore, make_tenant: Callable[[], TenantId],
        write_jsonl: Callable[..., Path], admin_conn: psycopg.Connection[Any]) -> None:
    tenant = make_tenant()
    records = scifact_records(3)
    run_ingestion(db, embedder, store, tenant, write_jsonl(records))
    before = counts(db, tenant)

    changed = [dict(r) for r in records]
    changed[1]["text"] = "A completely rewritten abstract about zebrafish fin regeneration."
    result = run_ingestion(db, embedder, store, tenant, write_jsonl(changed))
    assert (result.summary.ingested, result.summary.duplicate) == (1, 2)
    with db.tenant_session(tenant) as conn:
        versions = conn.execute(
            "SELECT version, is_current, superseded_at IS NOT NULL, "
            "(SELECT count(*) FROM rag.chunks c WHERE c.document_id = d.document_id) "
            "FROM rag.documents d WHERE source_uri = %s ORDER BY version",
            [f"corpus.jsonl#{records[1]['_id']}"]).fetchall()
    assert versions == [(1, False, True, 0), (2, True, False, 1)]
    assert counts(db, tenant)["corpus_version"] == before["corpus_version"] + 1
    hit = store.search(tenant, embedder.embed_queries(["zebrafish fin regeneration"])[0], k=1)
    assert "zebrafish" in hit[0].text

    # A version whose write fails mid-way leaves the previous version whole and current.
    admin_conn.execute("""
        CREATE OR REPLACE FUNCTION rag.test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.text LIKE '%POISON%' THEN RAISE EXCEPTION 'poisoned chunk'; END IF;
              RETURN NEW; END $$""")
    admin_conn.execute("CREATE TRIGGER test_poison BEFORE INSERT ON rag.chunks "
                       "FOR EACH ROW EXECUTE FUNCTION rag.test_poison()")
    try:
        poisoned = [dict(r) for r in changed]
        poisoned[0]["text"] = "POISON " + str(poisoned[0]["text"])
        poisoned[2]["text"] = "A second, harmless rewrite about tardigrade desiccation."
        snapshot_before = snapshot(db, tenant)
        result = run_ingestion(db, embedder, store, tenant, write_jsonl(poisoned))
        assert (result.summary.failed, result.summary.ingested, result.summary.duplicate) == \
            (1, 1, 1)
        assert result.summary.status == "partial"
        after = snapshot(db, tenant)
        first_uri = f"corpus.jsonl#{records[0]['_id']}"
        assert [r[:6] for r in after if r[0] == first_uri] == \
            [r[:6] for r in snapshot_before if r[0] == first_uri]
    finally:
        admin_conn.execute("DROP TRIGGER test_poison ON rag.chunks")
        admin_conn.execute("DROP FUNCTION rag.test_poison()")


def test_bad_records_are_rejected_with_reasons_and_the_rest_ingested(
        db: Database, embedder: Embedder, store: VectorStore, make_tenant: Callable[[], TenantId],
        write_jsonl: Callable[..., Path]) -> None:
    tenant = make_tenant()
    good = scifact_records(4)
    source = write_jsonl([good[0], b'{"_id": "broken", "text": ', good[1],
                          {"_id": "empty", "title": "t", "text": "   "},
                          b'{"_id": "latin1", "text": "caf\xe9"}', good[2], good[3],
                          {"_id": str(good[0]["_id"]), "title": "dup", "text": "dup"}])
    result = run_ingestion(db, embedder, store, tenant, source)
    summary = result.summary
    assert (summary.read, summary.ingested, summary.rejected) == (8, 4, 4)
    assert summary.balanced and summary.status == "partial"
    reasons = {(r["line_no"], r["reason"].split(":")[0]) for r in
               list_rejections(db, tenant, summary.job_id)}
    assert reasons == {(2, "malformed JSON"), (5, "invalid UTF-8 at byte 30"),
                       (4, "text length outside [1, 2000000] characters after trimming (got 0)"),
                       (8, f"duplicate id '{good[0]['_id']}' (first at line 1)")}


def test_unstorable_fields_are_rejected_per_record_not_the_whole_plan(
        db: Database, embedder: Embedder, store: VectorStore, make_tenant: Callable[[], TenantId],
        write_jsonl: Callable[..., Path]) -> None:
    tenant = make_tenant()
    good = scifact_records(2)
    deep: object = "leaf"
    for _ in range(40):
        deep = {"k": deep}
    source = write_jsonl([
        good[0],
        b'{"_id": "surrogate", "text": "half a pair \\ud800 here"}',
        {"_id": "nul-title", "title": "a\x00b", "text": "fine text"},
        {"_id": "nul-meta", "text": "fine text", "metadata": {"note": "x\x00"}},
        {"_id": "deep", "text": "fine text", "metadata": deep},
        b'{"_id": "very-deep", "text": "t", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        good[1]])
    result = run_ingestion(db, embedder, store, tenant, source)
    summary = result.summary
    assert (summary.read, summary.ingested, summary.rejected) == (7, 2, 5)
    assert summary.balanced and summary.status == "partial"
    reasons = {r["line_no"]: r["reason"] for r in list_rejections(db, tenant, summary.job_id)}
    assert reasons[2] == "record.text: contains a lone surrogate at 12"
    assert reasons[3] == "record.title: contains a NUL character at 1"
    assert reasons[4] == "record.metadata.note: contains a NUL character at 1"
    assert "nested deeper than 32 levels" in reasons[5]
    assert "nested deeper than 32 levels" in reasons[6]


def _cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RAG_STATE_DIR": str(TEST_STATE_DIR),
           "RAG_EMBEDDED_DATABASE": settings.embedded_database, "HF_HUB_OFFLINE": "1", **extra}
    for name in ("DATABASE_URL", "REDIS_URL", "RAG_DATABASE_URL", "RAG_REDIS_URL"):
        env.pop(name, None)
    return env


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _ingested_items(db: Database, tenant: TenantId) -> int:
    with db.tenant_session(tenant) as conn:
        row = conn.execute("SELECT count(*) FROM rag.ingestion_items "
                           "WHERE status <> 'pending'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_an_uninterrupted_run(
        db: Database, settings: Settings, embedder: Embedder, store: VectorStore,
        make_tenant: Callable[[], TenantId], write_jsonl: Callable[..., Path]) -> None:
    records = scifact_records(40, start=100)
    source = write_jsonl(records)
    reference, victim = make_tenant(), make_tenant()
    run_ingestion(db, embedder, store, reference, source, policy=SMALL_BATCHES)

    process = subprocess.Popen(
        [sys.executable, "-m", "rag_core.cli", "ingest", str(source), "--tenant", victim],
        env=_cli_env(settings, RAG_INGEST_CLAIM_BATCH="2", RAG_EMBED_BATCH_SIZE="16"),
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _ingested_items(db, victim) >= 8 or process.poll() is not None, 300,
                  "the ingestion to make progress")
        assert process.poll() is None, "ingestion ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    interrupted = _ingested_items(db, victim)
    assert 8 <= interrupted < 40

    resumed = run_ingestion(db, embedder, store, victim, source, policy=SMALL_BATCHES)
    assert resumed.resumed is True
    assert resumed.summary.status == "succeeded" and resumed.summary.balanced
    assert resumed.summary.ingested == 40
    assert_same_corpus(snapshot(db, victim), snapshot(db, reference))


@pytest.mark.slow
def test_two_worker_processes_share_one_job_without_overlap(
        db: Database, settings: Settings, embedder: Embedder, store: VectorStore,
        make_tenant: Callable[[], TenantId], write_jsonl: Callable[..., Path]) -> None:
    tenant = make_tenant()
    source = write_jsonl(scifact_records(30, start=200))
    job_id = plan_job(db, tenant, source, store.model_key, params={})
    env = _cli_env(settings, RAG_INGEST_CLAIM_BATCH="2", RAG_EMBED_BATCH_SIZE="16")
    workers = [subprocess.Popen(
        [sys.executable, "-m", "rag_core.cli", "ingest-worker", job_id, "--tenant", tenant,
         "--json"], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for _ in range(2)]
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    items = [o["worker"]["items"] for o in outputs]
    assert sum(items) == 30
    assert all(n > 0 for n in items), items  # both workers really shared the job
    summary = summarize(db, tenant, job_id)
    assert (summary.status, summary.ingested, summary.pending) == ("succeeded", 30, 0)
    with db.tenant_session(tenant) as conn:
        duplicated = conn.execute(
            "SELECT count(*) FROM (SELECT document_id, ordinal FROM rag.chunks "
            "GROUP BY 1, 2 HAVING count(*) > 1) d").fetchone()
        documents = conn.execute("SELECT count(*), count(DISTINCT source_uri) "
                                 "FROM rag.documents").fetchone()
    assert duplicated == (0,)
    assert documents == (30, 30)


@pytest.mark.slow
def test_job_survives_a_postgres_restart(embedder: Embedder, write_jsonl: Callable[..., Path],
                                         tmp_path: Path) -> None:
    state = REPO_ROOT / ".rag" / "test-lifecycle" / f"restart-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(state)
    server.start()
    try:
        settings = make_settings(state_dir=state, embedded_database="rag")
        services.ensure_embedded_database(state, "rag")
        services.upgrade_database(settings)
        with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
            tenant = tenant_admin.create_tenant(conn)
        source = write_jsonl(scifact_records(30, start=300))
        outcome: dict[str, Any] = {}
        with services.open_database(settings) as db:
            store = VectorStore(db, settings)

            def ingest() -> None:
                try:
                    outcome["result"] = run_ingestion(db, embedder, store, tenant, source,
                                                      policy=SMALL_BATCHES)
                except BaseException as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=ingest)
            thread.start()
            _wait_for(lambda: _ingested_items(db, tenant) >= 6, 300, "progress")
            server.stop()
            time.sleep(1.0)
            server.start()
            thread.join(600)
            assert "error" not in outcome, outcome.get("error")
            result = outcome["result"]
            assert result.summary.status == "succeeded" and result.summary.balanced
            assert result.summary.ingested == 30
            assert result.as_dict()["db_retries"] >= 1
            assert counts(db, tenant)["documents"] == 30
    finally:
        server.stop()
        import shutil
        shutil.rmtree(state, ignore_errors=True)
