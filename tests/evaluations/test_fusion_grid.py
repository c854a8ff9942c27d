"""The fusion grid scores a point exactly as ``rag eval retrieval`` scores the same settings
(dense reference included), records each point, and the interleaved latency measures both
retrievers; on 30 SciFact abstracts in a real tenant (real ingestion, embedder, PostgreSQL)."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import psycopg
import pytest

from evaluations.common.metrics import METRICS
from evaluations.retrieval.evaluation import run_retrieval_eval
from evaluations.retrieval.fusion_grid import (
    GridPoint,
    grid_points,
    interleaved_latency,
    run_fusion_grid,
)
from rag_core.config import Settings, scifact_dir
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import BenchmarkError

QUERIES = {"q_obesity": "How does obesity lead to insulin resistance and type 2 diabetes?",
           "q_bayes": "measuring the complexity and fit of Bayesian models",
           "q_stem": "how hematopoietic stem cells develop"}
QRELS = [("q_obesity", "120626", 2), ("q_obesity", "79447", 1), ("q_bayes", "70115", 2),
         ("q_bayes", "54440", 1), ("q_stem", "92499", 1)]


@pytest.fixture()
def tiny_beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    with gzip.open(scifact_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        (root / "corpus.jsonl").write_text("".join(itertools.islice(handle, 30)),
                                           encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, t in QUERIES.items()), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in QRELS),
        encoding="utf-8")
    return root


def test_grid_points_equal_the_evaluation_of_the_same_settings(
        settings: Settings, db: Database, embedder: Embedder, tiny_beir: Path) -> None:
    dense = run_retrieval_eval(settings, db, embedder, tiny_beir, k=20, keep_tenant=True)
    tenant = dense.tenant_id
    try:
        hybrid = run_retrieval_eval(settings, db, embedder, tiny_beir, mode="hybrid", k=20,
                                    tenant=tenant)
        policy = settings.hybrid
        assert policy.dense_candidates == policy.text_candidates
        same = GridPoint(policy.rrf_k, policy.dense_candidates, policy.dense_weight,
                         policy.text_weight)
        dense_only = GridPoint(60, 100, 1.0, 0.0)
        rows = run_fusion_grid(settings, db, embedder, tiny_beir, "test", tenant,
                               [same, dense_only, GridPoint(10, 5, 1.0, 2.0)], k=20)
        assert [r.point for r in rows] == [same, dense_only, GridPoint(10, 5, 1.0, 2.0)]
        for metric in METRICS:
            assert rows[0].metrics[metric] == pytest.approx(hybrid.metrics[metric], abs=1e-5)
            assert rows[1].metrics[metric] == pytest.approx(dense.metrics[metric], abs=1e-5)
        assert rows[2].docs_per_query <= 10  # depth 5 per side: at most 10 chunks to fuse
        with psycopg.connect(resolve_targets(settings).admin_url) as conn:
            recorded = conn.execute(
                "SELECT benchmark, mode, config, metrics FROM rag.benchmark_runs "
                "WHERE run_id = %s", [rows[2].run_id]).fetchone()
        assert recorded is not None
        assert recorded[:2] == ("retrieval-fusion-grid", "hybrid")
        assert (recorded[2]["rrf_k"], recorded[2]["text_candidates"],
                recorded[2]["text_weight"]) == (10, 5, 2.0)
        assert recorded[3]["ndcg@10"] == round(rows[2].metrics["ndcg@10"], 5)

        latency = interleaved_latency(settings, db, embedder, tiny_beir, "test", tenant,
                                      rounds=2, k=5, limit_queries=2)
        assert (latency.queries, latency.rounds) == (2, 2)
        assert latency.dense_p95_ms > 0 and latency.hybrid_p95_ms > 0
        assert latency.as_dict()["hybrid"] == settings.hybrid.model_dump()
    finally:
        with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
            tenant_admin.delete_tenant(conn, tenant)


def test_grid_defaults_and_refusals(settings: Settings, db: Database,
                                    embedder: Embedder, tiny_beir: Path) -> None:
    points = grid_points()
    assert len(points) == 2 * 3 * 3 + 2
    assert points[-2].label == "dense only, depth 100"
    assert points[-1].label == "text only, depth 100"
    with pytest.raises(BenchmarkError, match="no points"):
        run_fusion_grid(settings, db, embedder, tiny_beir, "test", "tn_" + "0" * 32, [])
