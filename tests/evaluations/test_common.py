"""What every evaluation shares: the one percentile, the one BEIR reader, where reports go,
the backend workers' environment, and the JSON keys of the typed results (a contract: the
``--json`` output and ``results.json`` must not change shape)."""

from __future__ import annotations

import gzip
import json
import math
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evaluations.common.beir import (
    corpus_path,
    iter_jsonl,
    load_queries,
    queries_path,
    read_documents,
    write_jsonl,
)
from evaluations.common.paths import SOURCE_ROOT
from evaluations.common.reports import Report, reports_root
from evaluations.common.stats import median, percentile, percentiles, spread
from evaluations.embeddings.processes import worker_environment
from evaluations.ingest.benchmark import IngestBenchmark
from evaluations.query.benchmark import QueryBenchmarkResult
from evaluations.retrieval.results import (
    RetrievalEvalResult,
    RetrievalRunConfig,
    RetrievalTimings,
)
from rag_core.cli.dbt_docs import docs_dir as dbt_docs_dir
from rag_core.config import scifact_dir
from rag_core.errors import DatasetError
from rag_core.ops.analytics import data_docs_dir
from tests.conftest import make_settings


# --- the one percentile ------------------------------------------------------------------
def test_percentile_interpolates_linearly_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert median(values) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)  # 3 + 0.85 * (4 - 3)
    assert percentiles([7.0], [5, 50, 95]) == [7.0, 7.0, 7.0]
    assert math.isnan(percentile([], 95))
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile(values, 101)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=40),
       st.floats(min_value=0, max_value=100))
def test_percentile_is_numpys_default(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_spread_matches_inclusive_quartiles() -> None:
    values = [10.0, 12.5, 11.0, 30.0, 9.0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    result = spread(values, digits=3)
    assert result.as_dict() == {"median": 11.0, "min": 9.0, "max": 30.0,
                                "q1": round(q1, 3), "q3": round(q3, 3)}
    assert spread([5.0]).as_dict() == dict.fromkeys(("median", "min", "max", "q1", "q3"), 5.0)


# --- the one BEIR reader -----------------------------------------------------------------
def test_reader_reads_the_shipped_scifact(tmp_path: Path) -> None:
    root = scifact_dir()
    first = read_documents(corpus_path(root), limit=3)
    assert len(first) == 3 and {"_id", "title", "text"} <= first[0].keys()
    queries = load_queries(queries_path(root))
    assert len(queries) == 300 and all(isinstance(t, str) for t in queries.values())
    copy = write_jsonl(tmp_path / "corpus.jsonl", first)
    assert read_documents(copy) == first


def test_reader_names_the_file_and_line_of_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "corpus.jsonl.gz"
    with gzip.open(broken, "wt", encoding="utf-8") as handle:
        handle.write('{"_id": "1", "text": "a"}\r\n\n[1, 2]\n')
    with pytest.raises(DatasetError, match=r"line 3: not a JSON object"):
        list(iter_jsonl(broken))
    assert read_documents(broken, limit=1) == [{"_id": "1", "text": "a"}]
    with pytest.raises(DatasetError, match="no such file"):
        read_documents(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match=r"no queries\.jsonl"):
        queries_path(tmp_path)


# --- where reports go ----------------------------------------------------------------------
def test_reports_go_where_the_settings_say(tmp_path: Path) -> None:
    assert reports_root(make_settings(reports_dir=tmp_path)) == tmp_path
    # unset, in a checkout: the repository's reports/ folder
    assert reports_root(make_settings(reports_dir=None)) == SOURCE_ROOT / "reports"
    # the GX data docs and the dbt docs are reports like the benchmarks'
    assert data_docs_dir(make_settings(reports_dir=tmp_path)) == tmp_path / "gx"
    assert dbt_docs_dir(make_settings(reports_dir=None)) == SOURCE_ROOT / "reports" / "dbt-docs"
    report = Report("unit", "A unit report", command="pytest")
    report.results = {"answer": 42}
    folder = report.write(tmp_path)
    assert folder.parent == tmp_path / "unit"
    stored = json.loads((folder / "results.json").read_text())
    assert stored["results"] == {"answer": 42} and stored["command"] == "pytest"
    assert (folder / "report.md").read_text().startswith("# A unit report")


def test_workers_run_offline_and_can_import_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a hub download can never succeed here
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    env = worker_environment()
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["TQDM_DISABLE"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(SOURCE_ROOT), "elsewhere"]


# --- the JSON keys of the typed results ----------------------------------------------------
RETRIEVAL_KEYS = [
    "ok", "dataset", "dataset_dir", "split", "mode", "k", "ndcg@10", "recall@10", "recall@100",
    "mrr@10", "queries", "queries_without_results", "queries_skipped_no_relevant", "docs",
    "chunks", "ingested_now", "rejected", "failed", "judged_docs_not_ingested",
    "docs_per_query", "short_results", "plans", "timings", "config", "tenant_id",
    "tenant_kept", "git_commit", "started_at", "run_id"]
RUN_CONFIG_KEYS = [
    "k", "queries_limited_to", "mode", "document_score", "embedding_backend", "model_id",
    "model_version", "model_key", "chunk_max_tokens", "chunk_overlap_tokens",
    "chunk_max_title_tokens", "exact_search_max_rows", "hnsw_ef_search", "ingest_workers"]


def _retrieval_result(mode: str) -> RetrievalEvalResult:
    hybrid = mode == "hybrid"
    config = RetrievalRunConfig(10, 5, mode, "best_chunk", "fastembed", "m", "v", "mk", 256, 32,
                                64, 10_000, 100, 1, rrf_k=60 if hybrid else None,
                                text_candidates=10 if hybrid else None,
                                text_match="any" if hybrid else None)
    return RetrievalEvalResult(
        "tiny", "/data/tiny", "test", mode, 10,
        {"ndcg@10": 0.5, "recall@10": 0.6, "recall@100": 0.7, "mrr@10": 0.8}, 5, 0, 0, 30, 31,
        30, 0, 0, 0, 10.0, 0, {"exact": 5}, RetrievalTimings(1.0, 2.0, 3.0, 4.0, 0.1, 5.0),
        config, "tn_" + "a" * 32, False, None, "2026-01-01T00:00:00+00:00", 7,
        per_query={"q": {"ndcg@10": 0.5}})


def test_retrieval_result_keeps_its_json_keys() -> None:
    data = _retrieval_result("dense").as_dict()
    assert list(data) == RETRIEVAL_KEYS
    assert "per_query" not in data and data["ok"] is True and data["run_id"] == 7
    assert list(data["timings"]) == ["ingest_s", "search_s", "query_ms_p50", "query_ms_p95",
                                     "eval_s", "total_s"]
    assert list(data["config"]) == RUN_CONFIG_KEYS
    hybrid = _retrieval_result("hybrid").as_dict()["config"]
    assert list(hybrid) == [*RUN_CONFIG_KEYS, "rrf_k", "text_candidates", "text_match",
                            "dense_candidates", "dense_weight", "text_weight"]
    json.dumps(data)


def test_query_and_ingest_results_keep_their_json_keys() -> None:
    query = QueryBenchmarkResult(100, 4, 200.0, [210.0, 220.0, 230.0, 240.0],
                                 [1.0, 1.5, 1.9, 2.1], 4, 1, 5, 300, 900, 250.0, 1100.0)
    data = query.as_dict()
    assert list(data) == [
        "docs", "questions", "llm_latency_ms", "uncached_p50_ms", "uncached_p95_ms",
        "cached_p50_ms", "cached_p95_ms", "cache_hits", "batch_llm_calls", "single_llm_calls",
        "batch_tokens", "single_tokens", "batch_token_ratio", "batch_wall_ms",
        "singles_wall_ms", "goals"]
    assert data["cached_p50_ms"] == 1.7 and data["cached_p95_ms"] == pytest.approx(2.07)
    assert data["goals"] == {"cached_p95_le_2ms": False, "batch_one_call": True,
                             "batch_tokens_le_half": True}
    ingest = IngestBenchmark(10, 40, "fastembed", [2.0, 2.0], 4.0,
                             {"embed_s": 1.5, "status": "succeeded"}).as_dict()
    assert list(ingest) == ["docs", "chunks", "backend", "raw_embed_per_s", "ingest_per_s",
                            "ratio", "raw_embed_s", "ingest_s", "embed_s", "status"]
    assert (ingest["raw_embed_per_s"], ingest["ingest_per_s"], ingest["ratio"]) == \
        (20.0, 10.0, 0.5)
