"""The query path end to end: real PostgreSQL, real Redis, real embeddings, a fake Groq
server over real HTTP. Covers the seed's MUST-PASS items at the service level."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.codes import ErrorCode
from rag_core.common.outage import Control, outage_count
from rag_core.common.tenancy import TenantId
from rag_core.config import LLMSettings, RateLimitPolicy, Settings
from rag_core.db.pool import Database
from rag_core.query.service import QueryService
from rag_core.query.sessions import InvalidSessionIdError, new_session_id
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.fake_groq import (
    FakeGroqServer,
    FakeResponse,
    answering_responder,
    chat_completion,
)
from tests.conftest import REPO_ROOT
from tests.query.conftest import audit_rows, last_audit_id

QUESTIONS = [
    "What is the effect of vitamin D on bone density?",
    "Does smoking increase the risk of lung cancer?",
    "How do T cells recognise antigens?",
    "What causes antibiotic resistance in bacteria?",
    "Is obesity associated with type 2 diabetes?",
    "How does aspirin reduce cardiovascular events?",
    "What role do microRNAs play in gene regulation?",
]


def llm_settings(fake: FakeGroqServer) -> dict[str, Any]:
    return {"llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                               timeout_s=5.0)}


def test_single_question_offline_uses_the_labelled_extractive_answerer(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        db: Database) -> None:
    before = last_audit_id(db, corpus_tenant)
    session = new_session_id()
    answer = make_service().ask(corpus_tenant, QUESTIONS[0], session_id=session)
    assert answer.error_code is None
    assert answer.answer is not None and answer.answer.startswith("[extractive answer")
    assert answer.model == "extractive-fallback"
    assert len(answer.sources) == 5 and answer.citations
    assert set(answer.citations) <= {s.chunk_id for s in answer.sources}
    rows = audit_rows(db, corpus_tenant, before)
    assert [r["kind"] for r in rows] == ["query"]
    assert rows[0]["session_hash"] and session not in rows[0]["session_hash"]
    assert rows[0]["chunk_ids"] == [s.chunk_id for s in answer.sources]
    with pytest.raises(InvalidSessionIdError):
        make_service().ask(corpus_tenant, QUESTIONS[0], session_id="forged-cookie")
    # refused before any work (nothing redacted, retrieved or answered), and audited
    forged = audit_rows(db, corpus_tenant, rows[0]["audit_id"])
    assert [(r["error_code"], r["session_hash"], r["question_redacted"], r["chunk_ids"])
            for r in forged] == [("invalid_session_id", None, None, [])]


def test_five_questions_make_one_llm_call_with_exact_token_attribution(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId, db: Database,
        fake_llm: FakeGroqServer) -> None:
    before = last_audit_id(db, corpus_tenant)
    service = make_service(**llm_settings(fake_llm))
    answers = service.ask_many(corpus_tenant, QUESTIONS[:5])
    assert fake_llm.request_count == 1
    assert all(a.error_code is None and a.answer for a in answers)
    # The responder is deterministic: replaying the recorded request gives the usage the
    # server reported for it.
    usage = json.loads(answering_responder(fake_llm.requests[0]).body)["usage"]
    usage_prompt = usage["prompt_tokens"]
    assert sum(a.prompt_tokens for a in answers) == usage_prompt
    assert sum(a.completion_tokens for a in answers) == usage["completion_tokens"]
    # Attributed by each question's share, not split evenly.
    assert len({a.prompt_tokens for a in answers}) > 1
    rows = audit_rows(db, corpus_tenant, before)
    assert sorted(r["kind"] for r in rows) == ["batch"] + ["sub_query"] * 5
    batch_row = next(r for r in rows if r["kind"] == "batch")
    assert all(str(r["parent_request_id"]) == str(batch_row["request_id"])
               for r in rows if r["kind"] == "sub_query")
    assert batch_row["prompt_tokens"] == usage_prompt


def test_twelve_questions_use_three_calls(make_service: Callable[..., QueryService],
                                          corpus_tenant: TenantId,
                                          fake_llm: FakeGroqServer) -> None:
    questions = [f"{q} (variant {i})" for i, q in enumerate(QUESTIONS * 2)][:12]
    answers = make_service(**llm_settings(fake_llm)).ask_many(corpus_tenant, questions)
    assert fake_llm.request_count == 3
    assert len(answers) == 12 and all(a.answer for a in answers)


def test_replayed_workload_hits_the_cache_and_new_documents_invalidate_it(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId, db: Database,
        fake_llm: FakeGroqServer, settings: Settings, write_jsonl: Callable[..., Path],
        embedder: Any) -> None:
    service = make_service(**llm_settings(fake_llm))
    workload = QUESTIONS[:4] * 3 + [q.upper() for q in QUESTIONS[:2]]  # repeats, re-cased
    answers = [service.ask(corpus_tenant, q) for q in workload]
    hit_rate = sum(a.cache_hit for a in answers) / len(answers)
    assert hit_rate > 0.30
    assert [a.cache_hit for a in answers[:4]] == [False] * 4
    assert all(a.cache_hit for a in answers[4:])
    calls = fake_llm.request_count
    assert calls == 4

    # New documents bump the tenant's corpus version: the same question misses again.
    from rag_core.ingestion.runner import run_ingestion
    from rag_core.retrieval.vector_store import VectorStore
    extra = write_jsonl([{"_id": "new-1", "title": "Vitamin D and bone", "text":
                          "Vitamin D supplementation increased bone mineral density."}])
    run_ingestion(db, embedder, VectorStore(db, settings), corpus_tenant, extra)
    again = service.ask(corpus_tenant, QUESTIONS[0])
    assert again.cache_hit is False
    assert fake_llm.request_count == calls + 1


def test_pii_never_reaches_the_llm_or_the_audit_log(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId, db: Database,
        fake_llm: FakeGroqServer) -> None:
    before = last_audit_id(db, corpus_tenant)
    question = ("My email is jane.doe@example.com and my card 4111 1111 1111 1111: "
                "does vitamin D help bones?")
    answer = make_service(**llm_settings(fake_llm)).ask(corpus_tenant, question)
    assert answer.error_code is None
    body = fake_llm.requests[0].raw_body.decode()
    assert "jane.doe@example.com" not in body and "4111" not in body
    assert "[EMAIL]" in body
    row = audit_rows(db, corpus_tenant, before)[0]
    assert "jane.doe" not in (row["question_redacted"] or "")
    assert "[EMAIL]" in row["question_redacted"] and "[CARD]" in row["question_redacted"]


def test_rate_limit_refuses_with_retry_after_and_is_audited(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        db: Database) -> None:
    before = last_audit_id(db, corpus_tenant)
    service = make_service(rate_limit=RateLimitPolicy(requests_per_minute=3))
    answers = service.ask_many(corpus_tenant, QUESTIONS[:5])
    codes = [a.error_code for a in answers]
    assert codes[:3] == [None, None, None]
    assert codes[3:] == ["rate_limited", "rate_limited"]
    assert all(0 < (a.retry_after_s or 0) <= 60 for a in answers[3:])
    rows = audit_rows(db, corpus_tenant, before)
    assert len([r for r in rows if r["kind"] == "sub_query"]) == 5
    assert [r["error_code"] for r in rows if r["kind"] == "sub_query"].count("rate_limited") == 2


def test_token_quota_exhaustion_is_a_named_error_code(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer) -> None:
    service = make_service(**llm_settings(fake_llm), rate_limit=RateLimitPolicy(
        requests_per_minute=1000, tokens_per_day=2500))
    answers = [service.ask(corpus_tenant, q) for q in QUESTIONS]
    codes = [a.error_code for a in answers]
    assert codes[0] is None
    assert "quota_exceeded" in codes
    refused = answers[codes.index("quota_exceeded")]
    assert refused.retry_after_s is not None and refused.retry_after_s > 0
    assert fake_llm.request_count == codes.count(None)


def test_queries_keep_working_when_redis_dies_mid_run(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId, db: Database,
        fake_llm: FakeGroqServer, tmp_path: Path) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis-state")
    own_redis.start()
    try:
        service = make_service(redis_url=own_redis.url(), **llm_settings(fake_llm))
        first = service.ask(corpus_tenant, QUESTIONS[0])
        assert first.error_code is None and not first.cache_hit
        status = own_redis.status()
        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)
        bypassed = outage_count(Control.ANSWER_CACHE, "get")
        before = last_audit_id(db, corpus_tenant)
        answers = service.ask_many(corpus_tenant, QUESTIONS[:3])
        assert all(a.error_code is None and a.answer for a in answers)
        assert not any(a.cache_hit for a in answers)
        assert outage_count(Control.ANSWER_CACHE, "get") >= bypassed + 3
        assert len(audit_rows(db, corpus_tenant, before)) == 4  # batch + 3 sub-queries
    finally:
        with contextlib.suppress(Exception):
            own_redis.stop()


def test_one_failing_question_does_not_fail_its_batch(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer) -> None:
    def partial(request: Any) -> Any:
        user = next(m["content"] for m in request.messages if m["role"] == "user")
        ids = [q["id"] for q in json.loads(user)["questions"]]
        return chat_completion(json.dumps({"answers": [
            {"id": i, "answer": f"answer {i}", "citations": []} for i in ids if i != "q2"]}))

    fake_llm.set_default(partial)  # q2 is never answered, even alone
    answers = make_service(**llm_settings(fake_llm)).ask_many(corpus_tenant, QUESTIONS[:5])
    by_id = {a.question_id: a for a in answers}
    assert by_id["q2"].answer is None and by_id["q2"].error_code is not None
    assert all(by_id[q].answer and by_id[q].error_code is None
               for q in ("q1", "q3", "q4", "q5"))


def test_a_provider_error_body_reaches_the_log_not_the_caller(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "provider-internal-detail-7f3a"
    fake_llm.set_default(lambda request: FakeResponse(
        status=400, body=json.dumps({"error": {"message": secret}}).encode()))
    with caplog.at_level(logging.WARNING, logger="rag_core.query.service"):
        answer = make_service(**llm_settings(fake_llm)).ask(corpus_tenant, QUESTIONS[6])
    assert answer.error_code == ErrorCode.REQUEST_REJECTED and answer.answer is None
    assert answer.error == "the language model refused the request"
    assert secret not in json.dumps(answer.as_dict(), default=str)
    assert any(secret in record.getMessage() for record in caplog.records)


def test_audit_rows_are_spooled_when_the_database_refuses_and_flushed_later(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId, db: Database,
        admin_conn: psycopg.Connection[Any]) -> None:
    service = make_service()
    before = last_audit_id(db, corpus_tenant)
    admin_conn.execute("REVOKE INSERT ON rag.audit_log FROM rag_app")
    try:
        answers = service.ask_many(corpus_tenant, QUESTIONS[:2])
        assert all(a.answer for a in answers)  # the user is not failed by the audit
        assert service.audit.spooled() == 3
    finally:
        admin_conn.execute("GRANT INSERT ON rag.audit_log TO rag_app")
    assert audit_rows(db, corpus_tenant, before) == []
    assert service.audit.flush_spool().flushed == 3
    assert service.audit.flush_spool().flushed == 0
    rows = audit_rows(db, corpus_tenant, before)
    assert sorted(r["kind"] for r in rows) == ["batch", "sub_query", "sub_query"]


def test_cli_query_and_batch_print_json(corpus_tenant: TenantId, settings: Settings,
                                        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "RAG_STATE_DIR": str(settings.state_dir),
           "RAG_EMBEDDED_DATABASE": settings.embedded_database}
    for name in ("DATABASE_URL", "REDIS_URL", "GROQ_API_KEY", "RAG_LLM_API_KEY"):
        env.pop(name, None)
    single = subprocess.run(
        [sys.executable, "-m", "rag_core.cli", "query", QUESTIONS[1], "--tenant", corpus_tenant,
         "--json"], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
        check=False)
    assert single.returncode == 0, single.stderr
    payload = json.loads(single.stdout.strip().splitlines()[-1])
    assert payload["answer"].startswith("[extractive answer") and payload["sources"]
    assert "question" not in payload  # the raw question only with --include-question
    asked = subprocess.run(
        [sys.executable, "-m", "rag_core.cli", "query", QUESTIONS[1], "--tenant", corpus_tenant,
         "--include-question", "--json"], capture_output=True, text=True, env=env,
        cwd=REPO_ROOT, timeout=300, check=False)
    assert json.loads(asked.stdout.strip().splitlines()[-1])["question"] == QUESTIONS[1]

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"_id": str(i), "text": q}) + "\n"
                                 for i, q in enumerate(QUESTIONS)))
    out = tmp_path / "answers.jsonl"
    batch = subprocess.run(
        [sys.executable, "-m", "rag_core.cli", "batch", str(questions), "--tenant",
         corpus_tenant, "--out", str(out), "--json"], capture_output=True, text=True, env=env,
        cwd=REPO_ROOT, timeout=300, check=False)
    assert batch.returncode == 0, batch.stderr
    summary = json.loads(batch.stdout.strip().splitlines()[-1])
    assert summary["questions"] == summary["answered"] == len(QUESTIONS)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [str(i) for i in range(len(QUESTIONS))]
    assert out.stat().st_mode & 0o777 == 0o600
    assert all("question" not in line for line in lines)
    assert all(line["sources"] for line in lines)

    # A run that fails half-way (here: a tenant that does not exist) keeps the answers of
    # the last good run: the file is replaced only once complete.
    previous = out.read_bytes()
    failed = subprocess.run(
        [sys.executable, "-m", "rag_core.cli", "batch", str(questions), "--tenant",
         "tn_" + "0" * 31 + "7", "--out", str(out), "--json"], capture_output=True, text=True,
        env=env, cwd=REPO_ROOT, timeout=300, check=False)
    assert failed.returncode == 2, failed.stderr
    assert json.loads(failed.stdout.strip().splitlines()[-1])["code"] == "unknown_tenant"
    assert out.read_bytes() == previous and out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "questions.jsonl"]
