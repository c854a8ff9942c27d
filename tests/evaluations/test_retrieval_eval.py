"""The retrieval evaluation end to end on a tiny BEIR folder (real ingestion, real retriever,
real PostgreSQL), the BEIR loader, and hybrid search: RRF by hand, tenant isolation of the
full-text search, and the per-row tenant check when the database itself is sabotaged."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from evaluations.common.beir import load_beir
from evaluations.common.metrics import METRICS
from evaluations.retrieval.evaluation import documents_from_chunks, run_retrieval_eval
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings, scifact_dir
from rag_core.config.hybrid import HybridPolicy
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import CrossTenantLeakError, DatasetError
from rag_core.ops import services
from rag_core.retrieval.hybrid import HybridRetriever, reciprocal_rank_fusion
from rag_core.retrieval.retriever import Retrieval
from rag_core.retrieval.vector_store import ChunkToStore, RetrievedChunk, VectorStore

SCIFACT = scifact_dir() / "corpus.jsonl.gz"

# Queries over the first 30 SciFact abstracts, with grades written for this test.
TITLE_QUERY = "Targeting A20 Decreases Glioma Stem Cell Survival and Tumor Growth"  # doc 33370
QUERIES = {
    "q_title": TITLE_QUERY,
    "q_obesity": "How does obesity lead to insulin resistance and type 2 diabetes?",
    "q_bayes": "measuring the complexity and fit of Bayesian models",
    "q_stem": "how hematopoietic stem cells develop",
    "q_unrelated": "volcanic eruptions on the moons of Jupiter",
    "q_dev": "sacroiliac joint inflammation in spondyloarthropathy",
    "q_unjudged": "a query of no split",
}
TEST_QRELS = [("q_title", "33370", 1), ("q_obesity", "120626", 2), ("q_obesity", "79447", 1),
              ("q_bayes", "70115", 2), ("q_bayes", "54440", 1), ("q_stem", "92499", 1),
              ("q_unrelated", "164189", 1)]
DEV_QRELS = [("q_dev", "97884", 1), ("q_title", "33370", 1)]


@pytest.fixture()
def tiny_beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    with gzip.open(SCIFACT, "rt", encoding="utf-8") as handle:
        lines = list(itertools.islice(handle, 30))
    (root / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t, "metadata": {}}) + "\n"
                for q, t in QUERIES.items()), encoding="utf-8")
    for split, rows in (("test", TEST_QRELS), ("dev", DEV_QRELS)):
        # CRLF line ends and a header, as some BEIR archives ship them.
        text = "query-id\tcorpus-id\tscore\r\n" + "".join(f"{q}\t{d}\t{g}\r\n"
                                                        for q, d, g in rows)
        (root / "qrels" / f"{split}.tsv").write_bytes(text.encode())
    return root


def _benchmark_row(settings: Settings, run_id: int) -> tuple[Any, ...]:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        row = conn.execute("SELECT dataset, split, mode, metrics, per_query, config, timings, "
                           "git_commit FROM rag.benchmark_runs WHERE run_id = %s",
                           [run_id]).fetchone()
    assert row is not None, f"benchmark run {run_id} not recorded"
    return tuple(row)


def _tenant_exists(settings: Settings, tenant: str) -> bool:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        return tenant_admin.tenant_exists(conn, tenant)


# --- the BEIR loader ---------------------------------------------------------------------
def test_beir_loader_splits_header_crlf_and_limits(tiny_beir: Path) -> None:
    test = load_beir(tiny_beir)
    assert list(test.queries) == ["q_title", "q_obesity", "q_bayes", "q_stem", "q_unrelated"]
    assert test.qrels["q_obesity"] == {"120626": 2, "79447": 1}
    assert test.corpus_path.name == "corpus.jsonl"
    dev = load_beir(tiny_beir, "dev")
    assert dev.qrels == {"q_dev": {"97884": 1}, "q_title": {"33370": 1}}
    assert list(load_beir(tiny_beir).limited(2).queries) == ["q_title", "q_obesity"]
    with pytest.raises(DatasetError, match=r"no qrels for split 'train' \(available: dev, "
                                               r"test\)"):
        load_beir(tiny_beir, "train")
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq_gone\t1\t1\n")
    with pytest.raises(DatasetError, match=r"not in queries\.jsonl"):
        load_beir(tiny_beir)


# --- the evaluation end to end -----------------------------------------------------------
def test_dense_eval_end_to_end(settings: Settings, db: Database, embedder: Embedder,
                               tiny_beir: Path) -> None:
    result = run_retrieval_eval(settings, db, embedder, tiny_beir).as_dict()
    json.dumps(result)  # JSON-able as it is
    assert result["ok"] and result["mode"] == "dense" and result["split"] == "test"
    assert result["queries"] == 5
    assert (result["docs"], result["rejected"], result["failed"]) == (30, 0, 0)
    assert result["judged_docs_not_ingested"] == 0
    assert result["chunks"] >= 30
    for metric in METRICS:
        assert 0.0 <= result[metric] <= 1.0, metric
    assert result["recall@100"] == 1.0  # 30 documents: every one is ranked
    assert result["docs_per_query"] == 30
    assert result["plans"] == {"exact": 5}
    assert {"ingest_s", "search_s", "query_ms_p50", "eval_s", "total_s"} <= \
        set(result["timings"])

    dataset, split, mode, metrics, per_query, config, timings, commit = \
        _benchmark_row(settings, result["run_id"])
    assert (dataset, split, mode) == ("tiny", "test", "dense")
    assert {m: metrics[m] for m in METRICS} == {m: result[m] for m in METRICS}
    assert set(per_query) == {"q_title", "q_obesity", "q_bayes", "q_stem", "q_unrelated"}
    # The query that is a document's exact title ranks that document first.
    assert per_query["q_title"]["mrr@10"] == 1.0
    assert per_query["q_title"]["ndcg@10"] == 1.0
    assert config["k"] == 100 and config["chunk_max_tokens"] == settings.chunk_max_tokens
    assert timings["total_s"] > 0
    assert commit == result["git_commit"]
    assert not _tenant_exists(settings, result["tenant_id"])  # cleaned up


def test_documents_take_their_best_chunk_or_only_their_first() -> None:
    tenant = TenantId("tn_" + "a" * 32)

    def chunk(chunk_id: int, document_id: int, ordinal: int, distance: float) -> RetrievedChunk:
        return RetrievedChunk(chunk_id, document_id, tenant, ordinal, "t", distance, "exact")

    # best first: doc 1's second window beats every first window
    retrieval = Retrieval([chunk(11, 1, 1, 0.10), chunk(20, 2, 0, 0.20), chunk(10, 1, 0, 0.40),
                           chunk(31, 3, 2, 0.50)], False, 0.0, 0.0, False)
    doc_ids = {1: "d1", 2: "d2", 3: "d3"}
    assert documents_from_chunks(retrieval, doc_ids) == pytest.approx(
        {"d1": 0.90, "d2": 0.80, "d3": 0.50})
    # MTEB's view: a document is its first window; d3's first window was not retrieved
    assert documents_from_chunks(retrieval, doc_ids, first_chunk_only=True) == pytest.approx(
        {"d2": 0.80, "d1": 0.60})


def test_hybrid_eval_on_another_split_and_a_kept_tenant_reused(
        settings: Settings, db: Database, embedder: Embedder, tiny_beir: Path) -> None:
    result = run_retrieval_eval(settings, db, embedder, tiny_beir, split="dev", mode="hybrid",
                                k=20, limit_queries=1, keep_tenant=True).as_dict()
    try:
        assert (result["mode"], result["split"], result["queries"], result["k"]) == \
            ("hybrid", "dev", 1, 20)
        assert _tenant_exists(settings, result["tenant_id"])
        _, _, mode, _, per_query, config, _, _ = _benchmark_row(settings, result["run_id"])
        assert mode == "hybrid" and (config["rrf_k"], config["text_weight"]) == (
            settings.hybrid.rrf_k, settings.hybrid.text_weight)
        assert set(per_query) == {"q_dev"}  # limited to the first judged query of dev
        assert all(0.0 <= result[m] <= 1.0 for m in METRICS)

        # The kept tenant serves another run: nothing is embedded or stored again.
        again = run_retrieval_eval(settings, db, embedder, tiny_beir, split="dev",
                                   tenant=result["tenant_id"], limit_queries=1,
                                   document_score="first_chunk").as_dict()
        assert (again["tenant_id"], again["tenant_kept"]) == (result["tenant_id"], True)
        assert (again["ingested_now"], again["docs"], again["chunks"]) == \
            (0, 30, result["chunks"])
        assert again["mode"] == "dense" and _tenant_exists(settings, result["tenant_id"])
        assert again["config"]["document_score"] == "first_chunk"
    finally:
        with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
            tenant_admin.delete_tenant(conn, result["tenant_id"])


def test_benchmark_runs_are_readable_but_not_writable_by_the_application(
        db: Database) -> None:
    with db.unscoped_session() as conn:
        conn.execute("SELECT count(*) FROM rag.benchmark_runs").fetchone()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.unscoped_session() as conn:
        conn.execute("INSERT INTO rag.benchmark_runs (benchmark, dataset, started_at) "
                     "VALUES ('retrieval', 'x', now())")


# --- hybrid search -----------------------------------------------------------------------
def test_rrf_hand_checked() -> None:
    # rrf_k = 1 keeps the arithmetic readable: 1 / (1 + rank).
    fused = reciprocal_rank_fusion([[10, 20, 30], [30, 40]], rrf_k=1)
    assert [item for item, _ in fused] == [30, 10, 20, 40]
    assert [score for _, score in fused] == pytest.approx([1 / 4 + 1 / 2, 1 / 2, 1 / 3, 1 / 3])
    # 20 and 40 tie at 1/3: 20 has the better rank in the first (dense) list.

    # The paper's constant, k = 60 (the product's default is 10: rag_core/config/hybrid.py).
    fused = dict(reciprocal_rank_fusion([[1, 2, 3], [3, 4, 1]], rrf_k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 63)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62) and fused[4] == pytest.approx(1 / 62)
    assert [i for i, _ in reciprocal_rank_fusion([[1, 2, 3], [3, 4, 1]], rrf_k=60)] == [
        1, 3, 2, 4]
    # A repeated id counts once, at its best rank; empty lists are fine.
    assert reciprocal_rank_fusion([[5, 5, 6], []], rrf_k=0) == [(5, 1.0), (6, 1 / 3)]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], rrf_k=-1)


# No lexeme of the query occurs in the Danio documents (english stemming), so they can only
# be found by meaning; "qwzxv" occurs only in the inventory note, which means nothing close.
HYBRID_QUERY = "zebrafish fin regrowth qwzxv"
DANIO = ["Danio rerio regenerate the caudal appendage within days after amputation.",
         "After amputation the tail of Danio rerio regrows from a blastema.",
         "Teleost appendages such as the caudal one of Danio rerio regrow completely."]
INVENTORY = "qwzxv: warehouse inventory of chairs, tables and desk lamps."


def _store_texts(store: VectorStore, embedder: Embedder, tenant: TenantId,
                 texts: list[str]) -> None:
    vectors = embedder.embed_passages(texts)
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        digest = hashlib.sha256(text.encode()).digest()
        store.add_document(tenant, f"doc://{i}", digest,
                           [ChunkToStore(text, embedder.count_tokens(text), digest, vector)])


def test_hybrid_fuses_dense_and_text_within_the_tenant(
        settings: Settings, db: Database, embedder: Embedder, store: VectorStore,
        make_tenant: Callable[[], TenantId]) -> None:
    mine, other = make_tenant(), make_tenant()
    _store_texts(store, embedder, mine, [*DANIO, INVENTORY])
    # The other tenant holds the same texts and more matches for the query's words.
    _store_texts(store, embedder, other, [*DANIO, INVENTORY, "zebrafish fin regrowth qwzxv"])
    # Equal weights and k 60 keep the arithmetic below by hand (the defaults are measured ones).
    retriever = HybridRetriever(embedder, store, db, k=2, candidates=2,
                                policy=HybridPolicy(rrf_k=60, text_weight=1.0))

    text_hits = retriever.text_search(mine, HYBRID_QUERY, 10)
    assert [h.text for h in text_hits] == [INVENTORY]
    assert {h.tenant_id for h in text_hits} == {mine}

    result = retriever.retrieve(mine, HYBRID_QUERY)
    assert {c.tenant_id for c in result.chunks} == {mine}
    assert (result.dense_count, result.text_count) == (2, 1)
    dense_top = store.search(mine, embedder.embed_queries([HYBRID_QUERY])[0], 2)
    assert INVENTORY not in {c.text for c in dense_top}, "premise: dense alone misses it"
    # Fused by hand: dense #1 and text #1 both score 1/61; the tie goes to the dense one.
    assert [c.text for c in result.chunks] == [dense_top[0].text, INVENTORY]
    assert [(h.dense_rank, h.text_rank) for h in result.fused] == [(1, None), (None, 1)]
    assert [h.score for h in result.fused] == pytest.approx([1 / 61, 1 / 61])
    # The text-only chunk still carries its true cosine similarity to the question.
    text_only = result.chunks[1]
    assert text_only.plan == "text"
    expected = float(embedder.embed_queries([HYBRID_QUERY])[0]
                     @ embedder.embed_passages([INVENTORY])[0])
    assert text_only.score == pytest.approx(expected, abs=1e-4)

    # Deeper: every chunk of this tenant, none of the other's, fused scores consistent.
    deep_retriever = HybridRetriever(embedder, store, db, k=10, candidates=10)  # defaults
    deep = deep_retriever.retrieve(mine, HYBRID_QUERY)
    assert len(deep.chunks) == 4 and {c.tenant_id for c in deep.chunks} == {mine}
    policy = deep_retriever.policy
    for hit in deep.fused:
        expected_score = sum(weight / (policy.rrf_k + rank) for weight, rank in (
            (policy.dense_weight, hit.dense_rank), (policy.text_weight, hit.text_rank)) if rank)
        assert hit.score == pytest.approx(expected_score)
    assert [h.score for h in deep.fused] == sorted((h.score for h in deep.fused), reverse=True)


def test_text_search_refuses_a_foreign_or_unset_tenant(
        db: Database, make_tenant: Callable[[], TenantId]) -> None:
    mine, other = make_tenant(), make_tenant()
    statement = "SELECT * FROM rag.search_chunks_text(%s, 'qwzxv', 10)"
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="outside its tenant"), \
            db.tenant_session(mine) as conn:
        conn.execute(statement, [other])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="outside its tenant"), \
            db.unscoped_session() as conn:
        conn.execute(statement, [other])
    with pytest.raises(psycopg.errors.InvalidParameterValue), db.tenant_session(mine) as conn:
        conn.execute("SELECT * FROM rag.search_chunks_text(%s, 'x', 10, 'regex')", [mine])
    with db.tenant_session(mine) as conn:  # only stop words: nothing to search, no error
        assert conn.execute("SELECT * FROM rag.search_chunks_text(%s, 'the of and', 10)",
                            [mine]).fetchall() == []
        # tsquery syntax in the question is just text.
        assert conn.execute("SELECT * FROM rag.search_chunks_text(%s, %s, 10)",
                            [mine, "a' & !b | (c:* <-> \\d"]).fetchall() == []


def test_text_rows_of_another_tenant_are_refused_even_if_the_database_leaks(
        create_database: Callable[[str], Settings], embedder: Embedder) -> None:
    """Sabotage the database as its owner (no RLS, a text search that ignores the tenant):
    the retriever's own per-row check still refuses the foreign rows."""
    settings = create_database("hybsab")
    services.upgrade_database(settings)
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        victim, attacker = tenant_admin.create_tenant(conn), tenant_admin.create_tenant(conn)
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
    with services.open_database(settings) as db:
        VectorStore(db, settings).add_document(
            victim, "v://1", b"v", [ChunkToStore(INVENTORY, 12, b"c", vector)])
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE rag.chunks NO FORCE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE rag.chunks DISABLE ROW LEVEL SECURITY")
        conn.execute("""
            CREATE OR REPLACE FUNCTION rag.search_chunks_text(
                p_tenant_id text, p_query text, p_k integer DEFAULT 10,
                p_match text DEFAULT 'any')
            RETURNS TABLE (chunk_id bigint, document_id bigint, tenant_id text,
                           ordinal integer, text text, rank real)
            LANGUAGE sql AS $$
                SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text,
                       1.0::real FROM rag.chunks c LIMIT p_k $$""")
    with services.open_database(settings) as db:
        retriever = HybridRetriever(embedder, VectorStore(db, settings), db)
        with pytest.raises(CrossTenantLeakError) as info:
            retriever.text_search(attacker, "qwzxv")
    assert (info.value.expected_tenant, info.value.row_tenant) == (attacker, victim)

