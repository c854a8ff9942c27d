"""Hybrid retrieval's fusion parameters (``Settings.hybrid``, ``RAG_HYBRID__*``) are honoured:
weights (0 switches a list off: text weight 0 is the dense order), the RRF constant, the
depth of each search; the settings reach the query path's retriever; the shipped NFCorpus
loads with its graded judgements. Real PostgreSQL and the real MiniLM embedder, five texts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

from evaluations.cli.datasets import dataset_dir
from evaluations.common.beir import corpus_path, iter_jsonl, load_beir
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import HybridPolicy, Settings, nfcorpus_dir
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.query.variants import Variant
from rag_core.retrieval.hybrid import HybridRetriever, reciprocal_rank_fusion
from rag_core.retrieval.vector_store import ChunkToStore, RetrievedChunk, VectorStore
from tests.conftest import make_settings

QUERY = "zebrafish fin regrowth after amputation qwzxv"
TEXTS = ["Danio rerio regenerate the caudal appendage within days after amputation.",
         "After amputation the tail of Danio rerio regrows from a blastema.",
         "Zebrafish fin regrowth is studied in regeneration labs.",
         "qwzxv: warehouse inventory of chairs, tables and desk lamps.",
         "Amputation of a limb in mammals leaves a scar instead of new tissue."]


@pytest.fixture()
def tenant(store: VectorStore, embedder: Embedder,
           make_tenant: Callable[[], TenantId]) -> TenantId:
    tenant = make_tenant()
    for i, (text, vector) in enumerate(zip(TEXTS, embedder.embed_passages(TEXTS),
                                           strict=True)):
        digest = hashlib.sha256(text.encode()).digest()
        store.add_document(tenant, f"doc://{i}", digest,
                           [ChunkToStore(text, embedder.count_tokens(text), digest, vector)])
    return tenant


def _ids(chunks: list[RetrievedChunk]) -> list[int]:
    return [c.chunk_id for c in chunks]


def test_weighted_rrf_by_hand() -> None:
    # rrf_k = 1: dense weight 2, text weight 0.5.
    fused = reciprocal_rank_fusion([[10, 20], [20, 30]], rrf_k=1, weights=[2.0, 0.5])
    assert [i for i, _ in fused] == [10, 20, 30]
    assert [score for _, score in fused] == pytest.approx([2 / 2, 2 / 3 + 0.5 / 2, 0.5 / 3])
    # A list of weight 0 is left out entirely (its ids do not appear).
    alone = reciprocal_rank_fusion([[1, 2], [3, 1]], weights=[1.0, 0.0])
    assert [i for i, _ in alone] == [1, 2]
    default_k = HybridPolicy().rrf_k  # the function's default constant is the policy's
    assert [score for _, score in alone] == pytest.approx([1 / (default_k + 1),
                                                           1 / (default_k + 2)])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[1.0, 1.0])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[-1.0])


def test_policy_validates_and_reads_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pydantic.ValidationError, match="both be 0"):
        HybridPolicy(dense_weight=0, text_weight=0)
    monkeypatch.setenv("RAG_HYBRID__RRF_K", "7")
    monkeypatch.setenv("RAG_HYBRID__TEXT_WEIGHT", "0.25")
    monkeypatch.setenv("RAG_HYBRID__DENSE_CANDIDATES", "40")
    hybrid = make_settings().hybrid
    assert (hybrid.rrf_k, hybrid.text_weight, hybrid.dense_candidates) == (7, 0.25, 40)
    assert hybrid.dense_weight == HybridPolicy().dense_weight


def test_text_weight_zero_is_the_dense_order(
        db: Database, embedder: Embedder, store: VectorStore, tenant: TenantId) -> None:
    dense = store.search(tenant, embedder.embed_queries([QUERY])[0], 5)
    result = HybridRetriever(embedder, store, db, k=5,
                             policy=HybridPolicy(text_weight=0)).retrieve(tenant, QUERY)
    assert _ids(result.chunks) == _ids(dense)
    assert result.text_count == 0, "a list of weight 0 is not searched"
    assert all(h.text_rank is None for h in result.fused)
    # And dense weight 0 is the text order.
    retriever = HybridRetriever(embedder, store, db, k=5, policy=HybridPolicy(dense_weight=0))
    text = retriever.text_search(tenant, QUERY, 5)
    only_text = retriever.retrieve(tenant, QUERY)
    assert _ids(only_text.chunks) == [h.chunk_id for h in text] and only_text.dense_count == 0


def test_rrf_constant_weights_and_depths_are_honoured(
        db: Database, embedder: Embedder, store: VectorStore, tenant: TenantId) -> None:
    policy = HybridPolicy(rrf_k=5, dense_weight=2.0, text_weight=0.5, dense_candidates=4,
                          text_candidates=2)
    result = HybridRetriever(embedder, store, db, k=2, policy=policy).retrieve(tenant, QUERY)
    assert (result.dense_count, result.text_count) == (4, 2)
    assert len(result.chunks) == 2
    for hit in result.fused:
        expected = (2.0 / (5 + hit.dense_rank) if hit.dense_rank else 0.0) + \
            (0.5 / (5 + hit.text_rank) if hit.text_rank else 0.0)
        assert hit.score == pytest.approx(expected)
    assert all(h.text_rank is None or h.text_rank <= 2 for h in result.fused)
    # Asking for more chunks than a depth searches that side at least k deep.
    deeper = HybridRetriever(embedder, store, db, policy=policy).retrieve(tenant, QUERY, k=5)
    assert (deeper.dense_count, deeper.text_count) == (5, 5)


def test_the_query_path_builds_its_hybrid_retriever_from_the_settings(
        settings: Settings, db: Database, embedder: Embedder) -> None:
    policy = HybridPolicy(rrf_k=11, text_weight=0.7, text_candidates=30)
    configured = Settings(**(settings.model_dump() | {"hybrid": policy}))
    platform = Platform(configured, database=db, embedder=embedder, start_services=False)
    retriever = platform.routes.retriever(
        Variant("hybrid", "batch-qa-v1", configured.embedding_model_key))
    assert isinstance(retriever, HybridRetriever) and retriever.policy == policy
    assert platform.hybrid_retriever().policy == policy


def test_shipped_nfcorpus_has_graded_train_and_dev_judgements(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = nfcorpus_dir()
    dev, train = load_beir(root, "dev"), load_beir(root, "train")
    assert (len(dev.queries), len(train.queries)) == (324, 2590)
    assert not set(dev.queries) & set(train.queries)
    grades = [g for docs in dev.qrels.values() for g in docs.values()]
    assert (len(grades), grades.count(2), set(grades)) == (11_385, 521, {1, 2})
    corpus = {str(d["_id"]) for d in iter_jsonl(corpus_path(root))}
    assert len(corpus) == 3633
    assert {d for docs in dev.qrels.values() for d in docs} <= corpus
    # --dataset nfcorpus names the shipped copy, unless such a folder is where we run.
    monkeypatch.chdir(tmp_path)
    assert dataset_dir(Path("nfcorpus")) == root
    (tmp_path / "nfcorpus").mkdir()
    assert dataset_dir(Path("nfcorpus")) == Path("nfcorpus")
