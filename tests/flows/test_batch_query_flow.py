"""The ``batch-query`` Prefect flow answers a question file through the real query path.

The flow builds its platform the way a worker process does: from the environment, through
``rag_core.config.get_settings()`` and ``flows._resources.platform()``. The test points that
environment at the test servers (embedded PostgreSQL database of the session, embedded
Redis, the exported ONNX model) with no LLM key, so answers come from the labelled
extractive answerer and every stage except the LLM call is real.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows import _resources
from flows.batch_query import BatchQueryParameters, batch_query
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings, get_settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import PathOutsideRootsError
from rag_core.ingestion.runner import run_ingestion
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import VectorStore
from tests.conftest import TEST_STATE_DIR
from tests.ingestion.conftest import scifact_records
from tests.query.conftest import audit_rows, last_audit_id

# Ids deliberately not in sorted order: the answers must follow the file, not the ids.
QUESTIONS = [
    ("q-17", "What is the effect of vitamin D on bone density?"),
    ("q-03", "Does smoking increase the risk of lung cancer?"),
    ("q-11", "How do T cells recognise antigens?"),
    ("q-01", "What causes antibiotic resistance in bacteria?"),
    ("q-29", "Is obesity associated with type 2 diabetes?"),
    ("q-05", "How does aspirin reduce cardiovascular events?"),
    ("q-08", "What role do microRNAs play in gene regulation?"),
]
GROUP_SIZE = 3  # 7 questions: three tasks (3, 3, 1)

# Settings the flow process must not pick up from the developer's shell.
_FOREIGN_VARIABLES = ("DATABASE_URL", "RAG_DATABASE_URL", "RAG_APP_DATABASE_URL", "REDIS_URL",
                      "RAG_REDIS_URL", "RAG_LLM_API_KEY", "GROQ_API_KEY", "RAG_LLM_BASE_URL",
                      "GROQ_BASE_URL", "RAG_EMBEDDING_BACKEND", "RAG_EMBEDDING_MODEL_KEY")


@pytest.fixture(scope="module")
def flow_tenant(settings: Settings, embedder: Embedder,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantId]:
    """A tenant holding a few real SciFact abstracts."""
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="batch flow")
    source = tmp_path_factory.mktemp("flow-corpus") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(12, start=2000)))
    from rag_core.ops import services

    with services.open_database(settings) as db:
        result = run_ingestion(db, embedder, VectorStore(db, settings), tenant, source)
    assert result.summary.ingested == 12, result
    yield tenant
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant_admin.delete_tenant(conn, tenant)


@pytest.fixture()
def flow_environment(settings: Settings, embedder: Embedder, redis_server: EmbeddedRedis,
                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The environment of a worker process that serves the test database, and a fresh
    per-process platform built from it: questions may come from ``tmp_path`` only, answers
    go to ``tmp_path/outputs``."""
    monkeypatch.setenv("RAG_STATE_DIR", str(TEST_STATE_DIR))
    monkeypatch.setenv("RAG_QUESTIONS_ROOTS", json.dumps([str(tmp_path)]))
    monkeypatch.setenv("RAG_OUTPUTS_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("RAG_EMBEDDED_DATABASE", settings.embedded_database)
    # A fresh Redis key space: no rate-limit counters or cached answers of other tests.
    monkeypatch.setenv("RAG_REDIS_KEY_PREFIX", f"flow{secrets.token_hex(4)}")
    for name in _FOREIGN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    monkeypatch.setattr(_resources, "_platform", None)
    yield
    if _resources._platform is not None:
        _resources._platform.close()
    get_settings.cache_clear()


def _write_questions(folder: Path) -> Path:
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps({"id": qid, "question": text}) + "\n"
                            for qid, text in QUESTIONS), encoding="utf-8")
    return path


def _answers(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_batch_query_flow_answers_every_question_in_order_and_audits_it(
        prefect_harness: None, flow_environment: None, flow_tenant: TenantId, db: Database,
        tmp_path: Path) -> None:
    questions = _write_questions(tmp_path)
    before = last_audit_id(db, flow_tenant)

    summary = batch_query(BatchQueryParameters(questions=str(questions), tenant_id=flow_tenant,
                                               group_size=GROUP_SIZE, include_question=True))

    # The platform was built from the environment, against the test database.
    platform = _resources._platform
    assert platform is not None
    assert platform.settings.embedded_database == get_settings().embedded_database
    out = tmp_path / "outputs" / "questions.answers.jsonl"  # the default name, in outputs
    assert out.stat().st_mode & 0o777 == 0o600  # answers quote the tenant's documents
    answers = _answers(out)
    assert [(a["question_id"], a["question"]) for a in answers] == QUESTIONS
    assert all(a["error_code"] is None and a["answer"] for a in answers), answers
    assert all(a["sources"] for a in answers)
    assert len({a["request_id"] for a in answers}) == len(QUESTIONS)

    assert summary["output"] == str(out)
    assert summary["questions"] == len(QUESTIONS)
    assert summary["answered"] == len(QUESTIONS)
    assert summary["errors"] == {}
    assert summary["cache_hits"] == sum(bool(a["cache_hit"]) for a in answers) == 0
    assert summary["prompt_tokens"] == sum(int(a["prompt_tokens"]) for a in answers)
    assert summary["completion_tokens"] == sum(
        int(a["completion_tokens"]) for a in answers)

    # Exactly one audit row per question, for this tenant; a task of several questions also
    # writes one batch row that its questions' rows point to.
    rows = audit_rows(db, flow_tenant, before)
    assert len(rows) == len(QUESTIONS) + 2
    assert {r["tenant_id"] for r in rows} == {flow_tenant}
    questions_rows = {str(r["request_id"]): r for r in rows if r["kind"] != "batch"}
    assert set(questions_rows) == {a["request_id"] for a in answers}
    batches = {str(r["request_id"]) for r in rows if r["kind"] == "batch"}
    assert len(batches) == 2  # the last task asks a single question: no batch envelope
    for number, answer in enumerate(answers):
        row = questions_rows[str(answer["request_id"])]
        if number < 6:
            assert row["kind"] == "sub_query" and str(row["parent_request_id"]) in batches
        else:
            assert row["kind"] == "query" and row["parent_request_id"] is None
        assert row["chunk_ids"] == [s["chunk_id"] for s in answer["sources"]]
        assert row["error_code"] is None


@pytest.mark.slow
def test_batch_query_flow_honours_limit_and_output_and_reuses_cached_answers(
        prefect_harness: None, flow_environment: None, flow_tenant: TenantId, db: Database,
        tmp_path: Path) -> None:
    questions = _write_questions(tmp_path)
    first = batch_query(BatchQueryParameters(questions=str(questions), tenant_id=flow_tenant,
                                             group_size=GROUP_SIZE))
    assert first["cache_hits"] == 0
    before = last_audit_id(db, flow_tenant)
    out = tmp_path / "outputs" / "elsewhere" / "four.jsonl"  # a relative name, under outputs
    second = batch_query(BatchQueryParameters(questions=str(questions), tenant_id=flow_tenant,
                                              output="elsewhere/four.jsonl", limit=4,
                                              group_size=GROUP_SIZE))
    answers = _answers(out)
    # without include_question the raw question is not written, only its id
    assert [a["question_id"] for a in answers] == [qid for qid, _ in QUESTIONS[:4]]
    assert all("question" not in a for a in answers)
    assert (second["questions"], second["answered"], second["cache_hits"]) == (4, 4, 4)
    assert all(a["cache_hit"] for a in answers)
    # Cache hits are audited too.
    rows = [r for r in audit_rows(db, flow_tenant, before) if r["kind"] != "batch"]
    assert sorted(str(r["request_id"]) for r in rows) == sorted(
        str(a["request_id"]) for a in answers)
    assert all(r["cache_hit"] for r in rows)


@pytest.mark.slow
def test_batch_query_flow_refuses_paths_outside_its_folders_and_touches_nothing(
        prefect_harness: None, flow_environment: None, flow_tenant: TenantId, db: Database,
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    questions = _write_questions(tmp_path)
    elsewhere = tmp_path_factory.mktemp("not-a-root")
    foreign = _write_questions(elsewhere)
    victim = elsewhere / "precious.txt"
    victim.write_text("do not overwrite\n")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "link.jsonl").symlink_to(victim)
    (outputs / "out").symlink_to(elsewhere, target_is_directory=True)
    before = last_audit_id(db, flow_tenant)

    def refused(**params: str) -> PathOutsideRootsError:
        parameters = {"questions": str(questions)} | params
        with pytest.raises(PathOutsideRootsError) as caught:
            batch_query(BatchQueryParameters(tenant_id=flow_tenant, group_size=GROUP_SIZE,
                                             **parameters))
        return caught.value

    # questions outside the roots, directly, through ../ or through a link
    assert refused(questions=str(foreign)).roots == [str(tmp_path)]
    refused(questions=f"{tmp_path}/../{elsewhere.name}/questions.jsonl")
    (tmp_path / "linked.jsonl").symlink_to(foreign)
    refused(questions=str(tmp_path / "linked.jsonl"))
    # outputs outside the outputs folder, or over a symbolic link
    for output in [str(victim), f"../../{elsewhere.name}/precious.txt", "out/precious.txt",
                   "link.jsonl"]:
        assert refused(output=output).setting == "RAG_OUTPUTS_DIR"
    assert victim.read_text() == "do not overwrite\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt", "questions.jsonl"]
    assert (outputs / "link.jsonl").is_symlink()
    assert audit_rows(db, flow_tenant, before) == []  # refused before any question was asked


def test_parameters_reject_a_malformed_tenant_and_group_size() -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        BatchQueryParameters(questions="q.jsonl", tenant_id="tn_nope")
    with pytest.raises(ValueError, match="group_size"):
        BatchQueryParameters(questions="q.jsonl", tenant_id="tn_" + "0" * 32, group_size=0)
