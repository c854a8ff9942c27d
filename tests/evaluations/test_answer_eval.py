"""``rag eval answers`` end to end on a tiny SciFact folder: the claims through the real query
path (real PostgreSQL, Redis, embedder, extractive answerer), ragas' offline metrics checked
against values computed by hand from the run's own documents, the benchmark_runs row; the
LLM-judged metrics against a real HTTP server on 127.0.0.1 (a 429 retried after its
Retry-After, a judge that refuses reported as failed, not as a low score); the ``evaluate``
flow in the Prefect harness."""

from __future__ import annotations

import gzip
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from rapidfuzz.distance import Levenshtein

from evaluations.answers.evaluation import run_answer_eval
from evaluations.answers.judge import JudgeSettings
from flows import _resources
from flows.evaluate import EvaluateParameters, evaluate
from rag_core.composition import Platform
from rag_core.config import RetryPolicy, Settings, scifact_dir
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.fake_groq import (
    FakeGroqServer,
    FakeResponse,
    RecordedRequest,
    chat_completion,
    error_response,
    rate_limited,
)
from tests.cli.test_failures import RAG, servers_env
from tests.conftest import REPO_ROOT, TEST_STATE_DIR

# Short SciFact abstracts (one chunk each) and test claims judged against them; claim 238's
# second relevant document is not in the corpus (judged but not ingested).
DOCS = ["31715818", "10536636", "2251426", "14924526", "8551160", "7662206"]
QRELS = [("1", "31715818"), ("232", "10536636"), ("238", "2251426"), ("238", "99999999"),
         ("410", "14924526"), ("411", "14924526")]
REFERENCE = "Cataract and trachoma are the main causes of blindness in Southern Sudan."
CONFIG_KEYS = {"prompt_version", "model", "retrieval_mode", "embedding_model_key", "answerer"}


@pytest.fixture()
def tiny_scifact(tmp_path: Path) -> Path:
    root = tmp_path / "scifact-tiny"
    (root / "qrels").mkdir(parents=True)
    with gzip.open(scifact_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = {d["_id"]: d for d in map(json.loads, handle) if d["_id"] in DOCS}
    (root / "corpus.jsonl").write_text("".join(json.dumps(docs[d]) + "\n" for d in DOCS),
                                       encoding="utf-8")
    claims = {}
    for line in (scifact_dir() / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        query = json.loads(line)
        if query["_id"] in {q for q, _ in QRELS}:
            claims[query["_id"]] = query | ({"reference": REFERENCE}
                                            if query["_id"] == "232" else {})
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in claims.values()),
                                        encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS),
        encoding="utf-8")
    return root


def _row(settings: Settings, run_id: int) -> dict[str, Any]:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        row = conn.execute("SELECT benchmark, dataset, split, mode, config, metrics, per_query "
                           "FROM rag.benchmark_runs WHERE run_id = %s", [run_id]).fetchone()
    assert row is not None, f"run {run_id} not recorded"
    return dict(zip(("benchmark", "dataset", "split", "mode", "config", "metrics",
                     "per_query"), row, strict=True))


def _average_precision(verdicts: list[int]) -> float:
    hits = [sum(verdicts[:i + 1]) / (i + 1) for i, v in enumerate(verdicts) if v]
    return sum(hits) / (sum(verdicts) + 1e-10)


def test_rag_eval_answers_offline_scores_the_claims_as_computed_by_hand(
        settings: Settings, redis_server: EmbeddedRedis, embedder: Embedder,
        tiny_scifact: Path, tmp_path: Path) -> None:
    env = servers_env(settings, redis_server.url(), tmp_path)
    (tmp_path / "state" / "models").symlink_to(TEST_STATE_DIR / "models")
    # ragas, Great Expectations and the model load in the child: a generous guard, not a
    # time limit (run_rag's 180 s is too short on a busy 2-core machine)
    done = subprocess.run([*RAG, "eval", "answers", "--dataset", str(tiny_scifact), "--k",
                           "100", "--json"], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=900, check=False)
    output = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, output
    result = json.loads(done.stdout.strip().splitlines()[-1])

    run = result["settings"]
    assert (run["answerer"], run["model"], run["prompt_version"]) == \
        ("extractive", "extractive-fallback", "extractive-v1")
    # the query path's default retrieval (RAG_RETRIEVAL_MODE, hybrid)
    assert (run["retrieval_mode"], run["k"], run["queries"], run["dataset"]) == \
        ("hybrid", 100, 5, "scifact-tiny")
    assert run["embedding_model_key"] == "minilm-l6-v2"
    assert result["counts"] == {"queries": 5, "answered": 5, "errors": {}, "docs": 6,
                                "judged_docs_not_ingested": 1}
    assert result["tenant_kept"] is False and result["failed_metrics"] == {}
    assert set(result["skipped_metrics"]) == {"faithfulness", "answer_relevancy"}
    row = _row(settings, result["run_id"])
    assert (row["benchmark"], row["dataset"], row["split"], row["mode"]) == \
        ("answers", "scifact-tiny", "test", "hybrid")
    assert set(row["config"]) >= CONFIG_KEYS
    assert {k: row["config"][k] for k in CONFIG_KEYS} == {k: run[k] for k in CONFIG_KEYS}
    assert row["metrics"] == result["metrics"]

    # k=100 covers all six one-chunk documents: every claim retrieves the whole corpus.
    per_query = row["per_query"]
    assert set(per_query) == {"1", "232", "238", "410", "411"}
    assert all(sorted(q["retrieved"]) == sorted(DOCS) for q in per_query.values())
    metrics = result["metrics"]
    assert metrics["id_based_context_precision"] == pytest.approx(1 / 6, abs=1e-5)
    assert metrics["id_based_context_recall"] == pytest.approx((1 + 1 + 0.5 + 1 + 1) / 5)
    # A chunk is its whole abstract here: similarity 1 to its own text, < 0.5 to the others
    # (ranked precision then follows from where the relevant document was retrieved).
    expected_ap = [_average_precision([int(d in q["relevant"]) for d in q["retrieved"]])
                   for q in per_query.values()]
    assert metrics["non_llm_context_precision_with_reference"] == \
        pytest.approx(sum(expected_ap) / 5, abs=1e-5)
    assert metrics["non_llm_context_recall"] == 1.0
    # citations: the documents of the quoted sentences (none when no sentence shares a word
    # with the claim: the metric does not apply to that claim)
    for claim in per_query.values():
        cited, relevant = set(claim["cited"]), set(claim["relevant"])
        assert cited <= set(DOCS)
        assert claim["scores"]["id_based_citation_precision"] == (
            pytest.approx(len(cited & relevant) / len(cited)) if cited else None)
    citing = sum(1 for claim in per_query.values() if claim["cited"])
    assert citing >= 3
    assert result["metric_counts"]["id_based_citation_precision"]["scored"] == citing
    assert result["metric_counts"]["id_based_citation_precision"]["not_applicable"] == 5 - citing
    # the one claim with a reference answer
    answer = per_query["232"]["answer"]
    assert metrics["non_llm_string_similarity"] == pytest.approx(
        1 - Levenshtein.normalized_distance(answer, REFERENCE), abs=1e-5)
    assert result["metric_counts"]["non_llm_string_similarity"]["scored"] == 1
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        assert not tenant_admin.tenant_exists(conn, result["tenant_id"])


# --- the judge -------------------------------------------------------------------------------
QUESTION = "Which disease blinds people in Sudan?"


def judge_responder(*, refuse_nli: bool = False) -> Any:
    """Answers ragas' structured prompts: two statements per answer, the first supported;
    one generated question per relevancy request. ``refuse_nli``: verdicts get a 400."""

    def respond(request: RecordedRequest) -> FakeResponse:
        prompt = str(request.messages[-1].get("content", ""))
        if "judge the faithfulness of a series of statements" in prompt:
            if refuse_nli:
                return error_response(400, "no verdicts today")
            return chat_completion(json.dumps({"statements": [
                {"statement": "first", "reason": "in the context", "verdict": 1},
                {"statement": "second", "reason": "not in the context", "verdict": 0}]}))
        if "Break down each sentence" in prompt:
            return chat_completion(json.dumps({"statements": ["first", "second"]}))
        if "noncommittal" in prompt:
            return chat_completion(json.dumps({"question": QUESTION, "noncommittal": 0}))
        return error_response(400, "unexpected prompt")

    return respond


@pytest.fixture()
def judge_server() -> Iterator[FakeGroqServer]:
    with FakeGroqServer() as server:
        yield server


def _judge(server: FakeGroqServer) -> JudgeSettings:
    return JudgeSettings(base_url=f"{server.base_url}/openai/v1", model="judge-model",
                         requests_per_minute=6000, max_concurrency=2,
                         answer_relevancy_strictness=1,
                         retry=RetryPolicy(attempts=3, initial_backoff_s=0.01,
                                           max_backoff_s=0.02))


def test_judged_metrics_through_a_rate_limited_judge(
        settings: Settings, db: Database, embedder: Embedder, redis_server: EmbeddedRedis,
        tiny_scifact: Path, judge_server: FakeGroqServer) -> None:
    judge_server.set_default(judge_responder())
    judge_server.enqueue(rate_limited(retry_after=7))  # the first request: retried after 7 s
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    first = run_answer_eval(settings, db, embedder, tiny_scifact, limit_queries=3,
                            keep_tenant=True, judge=_judge(judge_server), judge_sleep=sleep)
    try:
        assert first.scores.failed == {}
        metrics = first.scores.metrics
        assert metrics["faithfulness"] == 0.5  # 1 of 2 statements supported, every claim
        claims = [first.per_query[q] for q in ("1", "232", "238")]
        texts = tiny_claims(tiny_scifact)
        vectors = embedder.embed_queries([QUESTION, texts["1"], texts["232"], texts["238"]])
        expected = float(np.mean(vectors[1:] @ vectors[0]))
        assert metrics["answer_relevancy"] == pytest.approx(expected, abs=1e-4)
        assert all(c["scores"]["faithfulness"] == 0.5 for c in claims)
        calls = first.scores.judge
        assert calls is not None
        # 3 claims x (statements + verdicts + 1 relevancy question) requests, one retried
        assert (calls.calls, calls.attempts, calls.retried, calls.rate_limited,
                calls.failed) == (9, 10, 1, 1, 0)
        assert 7.0 in waits and calls.retry_waits == [7.0]
        assert judge_server.request_count == 10
        assert {r.body["model"] for r in judge_server.requests} == {"judge-model"}
        assert first.settings.judge_model == "judge-model"

        # A judge that refuses the verdicts: faithfulness failed (no score), not 0.
        judge_server.set_default(judge_responder(refuse_nli=True))
        second = run_answer_eval(settings, db, embedder, tiny_scifact, limit_queries=3,
                                 tenant=first.tenant_id, judge=_judge(judge_server),
                                 judge_sleep=sleep)
        assert second.scores.metrics["faithfulness"] is None
        assert "faithfulness" in second.scores.failed
        assert second.scores.summary["faithfulness"].failed == 3
        assert second.scores.metrics["answer_relevancy"] == pytest.approx(expected, abs=1e-4)
        assert second.scores.metrics["id_based_context_recall"] is not None
        assert second.scores.judge is not None and second.scores.judge.failed == 3
        recorded = _row(settings, second.run_id or 0)
        assert recorded["metrics"]["faithfulness"] is None
        assert "faithfulness" in recorded["config"]["failed_metrics"]
    finally:
        with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
            tenant_admin.delete_tenant(conn, first.tenant_id)


def tiny_claims(root: Path) -> dict[str, str]:
    lines = (root / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return {q["_id"]: q["text"] for q in map(json.loads, lines)}


# --- the flow --------------------------------------------------------------------------------
def test_the_evaluate_flow_records_an_answers_run(
        prefect_harness: None, settings: Settings, db: Database, embedder: Embedder,
        redis_server: EmbeddedRedis, tiny_scifact: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rooted = settings.model_copy(update={"source_roots": (tiny_scifact.parent,)})
    with Platform(rooted, database=db, embedder=embedder, start_services=False) as platform:
        monkeypatch.setattr(_resources, "_platform", platform)
        result = evaluate(EvaluateParameters(dataset=str(tiny_scifact), limit_queries=2,
                                             mode="dense", judge=False))
    # the flow's mode, not the default (hybrid)
    assert result["settings"]["retrieval_mode"] == "dense"
    assert result["counts"]["queries"] == 2
    row = _row(settings, result["run_id"])
    assert (row["benchmark"], row["mode"]) == ("answers", "dense")
    assert set(row["config"]) >= CONFIG_KEYS
    assert row["metrics"] == result["metrics"]
    assert result["metrics"]["id_based_context_recall"] is not None
