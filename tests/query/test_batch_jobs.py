"""Batch jobs: the store under RLS (redacted questions, events in order, lease fencing) and
the background worker (groups, summary, outages, failures, stop, resume after SIGKILL).

Real PostgreSQL (a database of this module's own, so no other module's jobs are claimed),
real Redis, real embeddings; the LLM is the fake Groq server over real HTTP.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.composition import Platform
from rag_core.config import LLMSettings, RateLimitPolicy, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import (
    InputError,
    InputTooLargeError,
    InvalidQuestionError,
    InvalidQuestionIdsError,
    UnknownTenantError,
)
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.query.batch_jobs import BatchEvent, BatchJobs, ClaimedJob
from rag_core.query.batch_run import Question
from rag_core.query.batch_worker import BatchWorker
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.fake_groq import (
    FakeGroqServer,
    FakeResponse,
    RecordedRequest,
    answering_responder,
    error_response,
    slow,
)
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment
from tests.ingestion.conftest import scifact_records
from tests.query.conftest import audit_rows, last_audit_id

TOPICS = [
    "What is the effect of vitamin D on bone density?",
    "Does smoking increase the risk of lung cancer?",
    "How do T cells recognise antigens?",
    "What causes antibiotic resistance in bacteria?",
    "Is obesity associated with type 2 diabetes?",
    "How does aspirin reduce cardiovascular events?",
    "What role do microRNAs play in gene regulation?",
]


def questions(n: int, prefix: str = "q") -> list[Question]:
    # Ids deliberately not in sorted order: events follow the submission, not the ids.
    return [Question(f"{prefix}-{(7 * i) % 97:02d}", f"{TOPICS[i % len(TOPICS)]} (#{i})")
            for i in range(n)]


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch_settings(create_database: Callable[[str], Settings]) -> Settings:
    migrated = create_database("batch")
    services.upgrade_database(migrated)
    return migrated


@pytest.fixture(scope="module")
def admin_url(batch_settings: Settings) -> str:
    return resolve_targets(batch_settings).admin_url


@pytest.fixture(scope="module")
def batch_db(batch_settings: Settings) -> Iterator[Database]:
    with services.open_database(batch_settings) as database:
        yield database


def _create_tenant(admin_url: str) -> TenantId:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return tenant_admin.create_tenant(conn, display_name="batch tests")


@pytest.fixture(scope="module")
def tenant(batch_settings: Settings, batch_db: Database, embedder: Embedder, admin_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> TenantId:
    """A tenant holding 12 real SciFact abstracts."""
    created = _create_tenant(admin_url)
    source = tmp_path_factory.mktemp("batch-corpus") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(12, start=3000)))
    result = run_ingestion(batch_db, embedder, VectorStore(batch_db, batch_settings), created,
                           source)
    assert result.summary.ingested == 12, result
    return created


@pytest.fixture(scope="module")
def other_tenant(admin_url: str) -> TenantId:
    return _create_tenant(admin_url)


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(admin_url: str) -> Iterator[None]:
    """Every worker claims across tenants: a job a test leaves unfinished is closed, so the
    next test's worker never picks it up."""
    yield
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("UPDATE rag.batch_jobs SET status = 'failed', summary = '{}', "
                     "finished_at = now(), lease_owner = NULL, lease_until = NULL "
                     "WHERE status IN ('queued', 'running')")


def _platform_settings(batch_settings: Settings, fake: FakeGroqServer,
                       state_dir: Path) -> Settings:
    return batch_settings.model_copy(update={
        "state_dir": state_dir, "redis_key_prefix": f"b{secrets.token_hex(4)}",
        "rate_limit": RateLimitPolicy(requests_per_minute=100_000, tokens_per_day=100_000_000),
        "llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                           timeout_s=10.0)})


@pytest.fixture()
def platform(batch_settings: Settings, batch_db: Database, embedder: Embedder,
             redis_server: EmbeddedRedis, fake_llm: FakeGroqServer,
             tmp_path: Path) -> Iterator[Platform]:
    built = Platform(_platform_settings(batch_settings, fake_llm, tmp_path / "state"),
                     database=batch_db, embedder=embedder, redis_url=redis_server.url(),
                     start_services=False)
    yield built
    built.close()


@pytest.fixture()
def jobs(platform: Platform) -> BatchJobs:
    return platform.batch_jobs


def worker(platform: Platform, owner: str, **options: Any) -> BatchWorker:
    values: dict[str, Any] = {"poll_interval_s": 0.05, "lease_s": 10.0, "group_size": 5}
    values.update(options)
    return BatchWorker(platform.batch_jobs, platform.query_service, owner=owner, **values)


def all_events(jobs: BatchJobs, tenant: TenantId, batch_id: str) -> list[BatchEvent]:
    return jobs.events(tenant, batch_id, after_seq=0, limit=1000)


def job_row(admin_url: str, batch_id: str) -> dict[str, Any]:
    with psycopg.connect(admin_url) as conn, \
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM rag.batch_jobs WHERE batch_id = %s",
                          [batch_id]).fetchone()
    assert row is not None
    return row


def lease_passed(admin_url: str, batch_id: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT lease_until < clock_timestamp() FROM rag.batch_jobs "
                           "WHERE batch_id = %s", [batch_id]).fetchone()
    return bool(row and row[0])


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_complete_log(events: list[BatchEvent], asked: list[Question]) -> dict[str, Any]:
    """Every question answered exactly once, seq 1..n without gaps, the summary last and
    matching the answers; returns the summary's data."""
    assert [e.seq for e in events] == list(range(1, len(asked) + 2))
    assert [e.kind for e in events] == ["answer"] * len(asked) + ["summary"]
    answers = [e.data for e in events[:-1]]
    assert sorted(a["question_id"] for a in answers) == sorted(q.question_id for q in asked)
    summary = events[-1].data
    assert summary["questions"] == len(asked)
    assert summary["answered"] == sum(a["error_code"] is None and bool(a["answer"])
                                      for a in answers)
    assert summary["prompt_tokens"] == sum(a["prompt_tokens"] for a in answers)
    assert summary["completion_tokens"] == sum(a["completion_tokens"] for a in answers)
    assert summary["cache_hits"] == sum(bool(a["cache_hit"]) for a in answers)
    return summary


# --- the store -----------------------------------------------------------------------------
def test_submitted_questions_are_stored_redacted_and_the_job_is_queued(
        jobs: BatchJobs, tenant: TenantId, admin_url: str) -> None:
    email, phone = "jane.roe@example.org", "+44 20 7946 0958"
    job = jobs.submit(tenant, [Question("a", f"Mail {email} about vitamin D"),
                               Question("b", f"Call {phone} about smoking")])
    assert (job.status, job.question_count, job.answered, job.summary) == ("queued", 2, 0,
                                                                         None)
    assert json.loads(json.dumps(job.as_dict()))["batch_id"] == job.batch_id
    stored = json.dumps(job_row(admin_url, job.batch_id)["questions"])
    assert email not in stored and phone not in stored and "[EMAIL]" in stored
    assert jobs.get(tenant, job.batch_id) == job


def test_another_tenant_sees_neither_the_job_nor_its_events(
        platform: Platform, jobs: BatchJobs, tenant: TenantId, other_tenant: TenantId,
        batch_db: Database) -> None:
    job = jobs.submit(tenant, questions(2))
    assert worker(platform, "rls").run_once()
    assert len(all_events(jobs, tenant, job.batch_id)) == 3
    assert jobs.get(other_tenant, job.batch_id) is None
    assert jobs.events(other_tenant, job.batch_id) == []
    with batch_db.tenant_session(other_tenant) as conn:
        for table in ("batch_jobs", "batch_events"):
            count = conn.execute(f"SELECT count(*) FROM rag.{table} "  # noqa: S608
                                 "WHERE batch_id = %s", [job.batch_id]).fetchone()
            assert count == (0,), table
    # malformed and unknown ids are simply not found
    for missing in ("not-a-uuid", "", "00000000-0000-0000-0000-000000000000"):
        assert jobs.get(tenant, missing) is None
        assert jobs.events(tenant, missing) == []


def test_submit_refuses_a_batch_that_could_not_be_asked_and_stores_nothing(
        batch_db: Database, tenant: TenantId) -> None:
    jobs = BatchJobs(batch_db, max_questions=3, max_question_chars=100)

    def count() -> int:
        with batch_db.tenant_session(tenant) as conn:
            row = conn.execute("SELECT count(*) FROM rag.batch_jobs").fetchone()
        return int(row[0]) if row else 0

    before = count()
    ok = Question("ok", "Does aspirin help?")
    with pytest.raises(InputError):
        jobs.submit(tenant, [])
    with pytest.raises(InputTooLargeError, match="4 questions"):
        jobs.submit(tenant, questions(4))
    with pytest.raises(InvalidQuestionIdsError):
        jobs.submit(tenant, [ok, ok])
    with pytest.raises(InvalidQuestionIdsError):
        jobs.submit(tenant, [Question(" ", "Does aspirin help?")])
    with pytest.raises(InputTooLargeError, match="question id 1 has 201"):
        jobs.submit(tenant, [Question("x" * 201, "Does aspirin help?")])
    with pytest.raises(InvalidQuestionError, match="question 2: contains a NUL"):
        jobs.submit(tenant, [ok, Question("nul", "bad\x00question")])
    with pytest.raises(InvalidQuestionError, match="question 1: is empty"):
        jobs.submit(tenant, [Question("blank", "   ")])
    with pytest.raises(InputTooLargeError, match="question 1 has 101 characters"):
        jobs.submit(tenant, [Question("long", "x" * 101)])
    with pytest.raises(UnknownTenantError) as unknown:
        jobs.submit(new_tenant_id(), [ok])
    assert unknown.value.tenant_id.startswith("tn_")
    assert count() == before


def test_a_live_lease_is_never_claimed_twice_and_a_lost_one_fences_its_writer(
        jobs: BatchJobs, tenant: TenantId, admin_url: str) -> None:
    job = jobs.submit(tenant, questions(2))
    first = jobs.claim("worker-a", 0.5)
    assert isinstance(first, ClaimedJob) and first.batch_id == job.batch_id
    assert (first.tenant_id, first.attempts) == (tenant, 1)
    assert jobs.claim("worker-b", 0.5) is None  # held: nobody else gets it
    assert jobs.get(tenant, job.batch_id).status == "running"  # type: ignore[union-attr]

    # handed back: claimable at once, and the hand-back is not counted as an attempt
    assert jobs.release(first)
    second = jobs.claim("worker-b", 0.5)
    assert second is not None and (second.batch_id, second.attempts) == (job.batch_id, 1)
    assert not jobs.record_answers(first, [{"question_id": "x"}])  # no longer a-'s

    # a lease that passed (its worker died) is taken over; the old holder is fenced out
    wait_for(lambda: lease_passed(admin_url, job.batch_id), "the lease to pass", timeout=10)
    third = jobs.claim("worker-c", 5)
    assert third is not None and (third.owner, third.attempts) == ("worker-c", 2)
    assert not jobs.renew(second)
    assert not jobs.record_answers(second, [{"question_id": "x"}])
    assert all_events(jobs, tenant, job.batch_id) == []
    assert jobs.renew(third)


def test_a_tenant_with_fewer_live_jobs_is_served_first(
        jobs: BatchJobs, tenant: TenantId, other_tenant: TenantId) -> None:
    first, second = jobs.submit(tenant, questions(1)), jobs.submit(tenant, questions(1))
    later = jobs.submit(other_tenant, questions(1))  # newest, but its tenant runs nothing
    claimed = [jobs.claim(f"fair-{n}", 10) for n in range(3)]
    assert [c.batch_id if c else None for c in claimed] == [first.batch_id, later.batch_id,
                                                            second.batch_id]
    assert jobs.claim("fair-3", 10) is None


def test_the_claim_function_refuses_bad_arguments_and_is_the_application_roles_only(
        batch_db: Database, admin_url: str) -> None:
    for owner, lease in (("", 1.0), ("w", 0.0), ("w", float("nan")), ("w", 1e9)):
        with pytest.raises(psycopg.errors.InvalidParameterValue), \
                batch_db.unscoped_session() as conn:
            conn.execute("SELECT * FROM rag.claim_batch_job(%s, %s)", [owner, lease])
    with psycopg.connect(admin_url) as conn:
        acl = conn.execute("SELECT p.proacl::text, p.prosecdef FROM pg_proc p "
                           "WHERE p.proname = 'claim_batch_job'").fetchone()
    assert acl is not None and acl[1] is True
    grantees = {entry.split("=")[0] for entry in acl[0].strip("{}").split(",")}
    assert "" not in grantees  # no EXECUTE for PUBLIC
    assert "rag_app" in grantees


# --- the worker ----------------------------------------------------------------------------
def test_a_worker_answers_a_job_in_groups_and_ends_it_with_a_matching_summary(
        platform: Platform, jobs: BatchJobs, tenant: TenantId, batch_db: Database,
        fake_llm: FakeGroqServer) -> None:
    asked = questions(7)
    before = last_audit_id(batch_db, tenant)
    job = jobs.submit(tenant, asked)
    assert worker(platform, "w1").run_once()

    events = all_events(jobs, tenant, job.batch_id)
    summary = assert_complete_log(events, asked)
    answers = [e.data for e in events[:-1]]
    assert [a["question_id"] for a in answers] == [q.question_id for q in asked]
    for answer in answers:
        assert answer["error_code"] is None and answer["answer"], answer
        assert answer["sources"] and set(answer["citations"]) <= {
            s["chunk_id"] for s in answer["sources"]}
        assert answer["prompt_tokens"] > 0 and answer["completion_tokens"] > 0
        assert "question" not in answer  # the raw question is never in an event
    assert summary | {"wall_s": 0} == {
        "questions": 7, "answered": 7, "cache_hits": 0, "errors": {}, "wall_s": 0,
        "prompt_tokens": summary["prompt_tokens"],
        "completion_tokens": summary["completion_tokens"],
        "batch_id": job.batch_id, "status": "done", "error_code": None, "error": None}
    assert fake_llm.request_count == 2  # groups of 5: one call each (5 + 2)

    done = jobs.get(tenant, job.batch_id)
    assert done is not None and (done.status, done.answered) == ("done", 7)
    assert done.summary == summary and done.finished_at is not None
    assert not worker(platform, "w1").run_once()  # nothing left to claim

    # Every audit row of the job hangs under its id: a group's batch row, or the query row
    # of a group of one.
    rows = audit_rows(batch_db, tenant, before)
    tops = [r for r in rows if r["kind"] == "batch" or r["parent_request_id"] is None
            or str(r["parent_request_id"]) == job.batch_id]
    assert len(tops) == 2 and all(str(r["parent_request_id"]) == job.batch_id for r in tops)
    assert sum(r["kind"] != "batch" for r in rows) == 7


def _rejecting(marker: str) -> Callable[[RecordedRequest], FakeResponse]:
    def respond(request: RecordedRequest) -> FakeResponse:
        if marker in request.raw_body.decode():
            return error_response(400, "rejected by the test")
        return answering_responder(request)
    return respond


def test_a_failing_group_gives_its_questions_typed_codes_and_the_job_goes_on(
        platform: Platform, jobs: BatchJobs, tenant: TenantId,
        fake_llm: FakeGroqServer) -> None:
    marker = "zqxj"  # in the first group's questions only: the provider rejects those
    fake_llm.set_default(_rejecting(marker))
    asked = [Question("g-a", f"{TOPICS[0]} {marker}"), Question("g-b", f"{TOPICS[1]} {marker}"),
             *(Question(f"g{i}", text) for i, text in enumerate(TOPICS[2:5]))]
    job = jobs.submit(tenant, asked)
    assert worker(platform, "w2", group_size=2).run_once()

    events = all_events(jobs, tenant, job.batch_id)
    summary = assert_complete_log(events, asked)
    codes = [e.data["error_code"] for e in events[:-1]]
    assert codes == [ErrorCode.REQUEST_REJECTED] * 2 + [None] * 3
    assert (summary["status"], summary["answered"]) == ("done", 3)
    assert summary["errors"] == {"request_rejected": 2}


def test_a_job_that_raises_is_failed_with_its_code_and_the_thread_goes_on(
        platform: Platform, batch_db: Database, tenant: TenantId) -> None:
    # The store takes questions the query path refuses (its limit is the smaller one):
    # the group raises input_too_large, which is not an outage, so it escapes the job.
    lenient = BatchJobs(batch_db, max_question_chars=10_000)
    bad = lenient.submit(tenant, [Question("long", "vitamin D " * 500)])
    good = lenient.submit(tenant, questions(2))
    runner = worker(platform, "w3")
    runner.start()
    try:
        wait_for(lambda: all((lenient.get(tenant, j.batch_id) or j).status
                             in ("done", "failed") for j in (bad, good)), "both jobs")
        assert runner.alive
    finally:
        assert runner.stop(timeout=30)
    failed = lenient.get(tenant, bad.batch_id)
    assert failed is not None and failed.status == "failed"
    events = all_events(lenient, tenant, bad.batch_id)
    assert [(e.seq, e.kind) for e in events] == [(1, "summary")]
    data = events[0].data
    assert (data["status"], data["error_code"]) == ("failed", "input_too_large")
    assert "5000 characters" in data["error"] and "Traceback" not in json.dumps(data)
    assert failed.summary == data
    assert lenient.get(tenant, good.batch_id).status == "done"  # type: ignore[union-attr]


def test_stop_lets_the_group_finish_then_hands_the_job_back_to_the_next_worker(
        platform: Platform, jobs: BatchJobs, tenant: TenantId, admin_url: str,
        fake_llm: FakeGroqServer) -> None:
    gate = threading.Event()

    def held_answer(request: RecordedRequest) -> FakeResponse:
        gate.wait(60)
        return answering_responder(request)

    fake_llm.enqueue(held_answer)
    asked = questions(6)
    job = jobs.submit(tenant, asked)
    first = worker(platform, "w4", group_size=2)
    first.start()
    assert fake_llm.wait_for(lambda f: f.in_flight == 1, timeout=60)
    stopped: list[bool] = []
    stopping = threading.Thread(target=lambda: stopped.append(first.stop(timeout=60)))
    stopping.start()
    gate.set()  # the group in flight is answered and recorded before the job is handed back
    stopping.join()
    assert stopped == [True]
    assert [e.kind for e in all_events(jobs, tenant, job.batch_id)] == ["answer"] * 2
    row = job_row(admin_url, job.batch_id)
    assert (row["status"], row["lease_owner"], row["lease_until"], row["attempts"]) == \
        ("running", None, None, 0)

    assert worker(platform, "w5", group_size=2).run_once()  # at once: no lease to wait out
    assert_complete_log(all_events(jobs, tenant, job.batch_id), asked)
    assert job_row(admin_url, job.batch_id)["attempts"] == 1


def test_two_workers_on_one_queue_never_run_the_same_job(
        platform: Platform, jobs: BatchJobs, tenant: TenantId, batch_db: Database,
        admin_url: str, fake_llm: FakeGroqServer) -> None:
    fake_llm.set_default(lambda request: slow(answering_responder(request), 0.2))
    before = last_audit_id(batch_db, tenant)
    batches = [(jobs.submit(tenant, asked), asked)
               for asked in (questions(4, prefix=f"j{n}") for n in range(4))]
    runners = [worker(platform, f"pair-{n}", group_size=2) for n in range(2)]
    for runner in runners:
        runner.start()
    try:
        wait_for(lambda: all((jobs.get(tenant, job.batch_id) or job).status == "done"
                             for job, _ in batches), "every job")
    finally:
        for runner in runners:
            assert runner.stop(timeout=30)
    for job, asked in batches:
        assert_complete_log(all_events(jobs, tenant, job.batch_id), asked)
        assert job_row(admin_url, job.batch_id)["attempts"] == 1  # claimed once, by one
    # no question was asked twice (each is audited once)
    rows = audit_rows(batch_db, tenant, before)
    assert sum(r["kind"] != "batch" for r in rows) == 16


# --- a worker killed mid-job -----------------------------------------------------------------
_CHILD = """
import time
from rag_core.composition import Platform
from rag_core.config import get_settings
platform = Platform(get_settings())
platform.batch_worker.start()
while True:
    time.sleep(1)
"""


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_is_finished_by_another_without_a_gap(
        platform: Platform, jobs: BatchJobs, tenant: TenantId, batch_settings: Settings,
        admin_url: str, fake_llm: FakeGroqServer, tmp_path: Path) -> None:
    fake_llm.set_default(lambda request: slow(answering_responder(request), 0.7))
    asked = questions(10)
    job = jobs.submit(tenant, asked)
    env = cli_environment(
        RAG_STATE_DIR=str(TEST_STATE_DIR), RAG_EMBEDDED_DATABASE=batch_settings.embedded_database,
        RAG_REDIS_KEY_PREFIX=f"kill{secrets.token_hex(4)}", RAG_LLM_API_KEY="test-key",
        RAG_LLM_BASE_URL=fake_llm.base_url, RAG_BATCH_SIZE="2",
        RAG_SESSION_HASH_KEY=secrets.token_hex(32), RAG_AUDIT_HASH_KEY=secrets.token_hex(32),
        RAG_API__BATCH_LEASE_S="1", RAG_API__BATCH_POLL_INTERVAL_S="0.1",
        RAG_AUDIT_SPOOL_DIR=str(tmp_path / "child-spool"))
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(all_events(jobs, tenant, job.batch_id)) >= 4
                 or child.poll() is not None, "the child to record answers", timeout=180)
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        if child.stderr is not None:
            child.stderr.close()
    recorded = len(all_events(jobs, tenant, job.batch_id))
    row = job_row(admin_url, job.batch_id)
    assert row["status"] == "running" and row["lease_owner"] is not None
    assert 4 <= recorded < len(asked)

    fake_llm.set_default(answering_responder)
    successor = worker(platform, "successor", lease_s=1.0, group_size=2)
    wait_for(successor.run_once, "the dead worker's lease to pass", timeout=30)
    events = all_events(jobs, tenant, job.batch_id)
    summary = assert_complete_log(events, asked)
    assert (summary["status"], summary["answered"]) == ("done", len(asked))
    assert job_row(admin_url, job.batch_id)["attempts"] == 2
