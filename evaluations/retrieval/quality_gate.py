"""The retrieval-quality gate of an embedding rollout: nDCG@10 of the candidate key against
the baseline key on a golden question set, in a tenant that holds the golden corpus under
both keys.

An embedding version's error rate and latency can look perfect while it ranks the wrong
documents; the audit log cannot tell. So this gate (an *extra gate* of the rollout
controller, :data:`rag_core.ops.rollout.gates.ExtraGate`) measures what the canary's
retrieval would return: every golden query goes through the product's dense retriever
(``Retriever`` over the key's ``VectorStore``, the query embedded by the key's embedder as
the query path would: :meth:`~rag_core.composition.routes.QueryRoutes.embedder`), chunks
become documents as ``rag eval retrieval`` makes them (:func:`documents_from_chunks`) and
nDCG@10 is computed by the same ranx code. No cache is used: the measurement is of the
model, not of Redis.

Verdict: ``fail`` when the candidate's nDCG@10 is below the baseline's by more than
``max_drop`` (or the candidate cannot be measured: no embedder for its queries in this
process, vectors missing for part of the golden corpus), ``pass`` otherwise. Both scores
travel in the :class:`~rag_core.ops.rollout.gates.GateResult` (``canary``: candidate,
``control``: baseline, ``threshold``: baseline - ``max_drop``), so a rollback's audit record
says what was measured. This module lives in ``evaluations`` (the library never imports
it); flows may build the gate from a :class:`QualityGateSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from evaluations.common.metrics import evaluate_run
from evaluations.retrieval.evaluation import documents_from_chunks
from evaluations.retrieval.golden import GoldenSet
from rag_core.common.paths import confine
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.composition import Platform
from rag_core.db.flag_cohorts import Flag
from rag_core.errors import UnknownEmbeddingModelError
from rag_core.ingestion.model_keys import coverage
from rag_core.ops.rollout.gates import ExtraGate, GateResult, Outcome
from rag_core.retrieval.retriever import Retriever
from rag_core.retrieval.vector_store import VectorStore

__all__ = ["GATE_NAME", "METRIC", "QualityGateSpec", "QualityMeasurement", "gate_from_spec",
           "measure_retrieval", "retrieval_quality_gate"]

GATE_NAME = "retrieval_quality"
METRIC = "ndcg@10"
_DOCUMENT_IDS = ("SELECT document_id, external_id FROM rag.documents "
                 "WHERE tenant_id = %s AND is_current")


@dataclass(frozen=True)
class QualityMeasurement:
    """One key's retrieval quality on the golden set."""

    model_key: str
    model: str
    ndcg_at_10: float
    queries: int

    def as_dict(self) -> dict[str, object]:
        return {"model_key": self.model_key, "model": self.model,
                "ndcg_at_10": round(self.ndcg_at_10, 5), "queries": self.queries}


def _document_ids(platform: Platform, tenant: TenantId) -> dict[int, str]:
    with platform.database.tenant_session(tenant) as conn:
        rows = conn.execute(_DOCUMENT_IDS, [tenant]).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def measure_retrieval(platform: Platform, tenant_id: TenantId | str, model_key: str,
                      golden: GoldenSet, *, k: int = 50) -> QualityMeasurement:
    """nDCG@10 of ``model_key``'s dense retrieval in ``tenant_id`` over the golden queries
    that have a relevant document in the tenant (``k`` chunks retrieved per query, so that
    ten documents remain once chunks are merged into documents)."""
    tenant = parse_tenant_id(tenant_id)
    settings = platform.settings
    embedder = platform.routes.embedder(model_key)
    store = VectorStore(platform.database, settings, model_key=model_key)
    retriever = Retriever(embedder, store, None, k=k,
                          weak_score_below=settings.weak_score_below)
    doc_ids = _document_ids(platform, tenant)
    judged = golden.restricted_to(set(doc_ids.values()))
    run = {query_id: documents_from_chunks(retriever.retrieve(tenant, text, k), doc_ids)
           for query_id, text in judged.queries.items()}
    evaluation = evaluate_run(judged.qrels, run, (METRIC,))
    return QualityMeasurement(model_key, f"{embedder.model_id}@{embedder.model_version}",
                              evaluation.metrics[METRIC], evaluation.queries)


def retrieval_quality_gate(platform: Platform, tenant_id: TenantId | str, golden: GoldenSet,
                           *, baseline_key: str | None = None,
                           candidate_key: str | None = None, max_drop: float = 0.02,
                           k: int = 50) -> ExtraGate:
    """The gate comparing ``candidate_key`` (default: the key the flag's variant routes to)
    with ``baseline_key`` (default: the platform's ``embedding_model_key``) in the golden
    tenant ``tenant_id``; fails when the candidate's nDCG@10 is lower by more than
    ``max_drop``."""
    tenant = parse_tenant_id(tenant_id)
    if not 0 <= max_drop < 1:
        raise ValueError(f"max_drop must be in [0, 1), got {max_drop}")
    baseline = baseline_key or platform.settings.embedding_model_key

    def gate(flag: Flag) -> GateResult:
        candidate = candidate_key or flag.variant.get("embedding_model_key")
        if candidate is None:
            return GateResult(GATE_NAME, "fail", None, None, None,
                              f"flag {flag.name!r} routes to no embedding model key and no "
                              "candidate key was given")
        missing = coverage(platform.database, tenant, candidate).missing
        if missing:
            return GateResult(GATE_NAME, "fail", None, None, None,
                              f"{missing} chunks of the golden tenant have no vector under "
                              f"{candidate!r}: re-embed it first")
        control = measure_retrieval(platform, tenant, baseline, golden, k=k)
        try:
            canary = measure_retrieval(platform, tenant, candidate, golden, k=k)
        except UnknownEmbeddingModelError as exc:
            return GateResult(GATE_NAME, "fail", None, round(control.ndcg_at_10, 5), None,
                              str(exc))
        floor = control.ndcg_at_10 - max_drop
        outcome: Outcome = "pass" if canary.ndcg_at_10 >= floor else "fail"
        return GateResult(
            GATE_NAME, outcome, round(canary.ndcg_at_10, 5), round(control.ndcg_at_10, 5),
            round(floor, 5),
            f"{METRIC} of {candidate} ({canary.model}) vs {baseline} ({control.model}) on "
            f"{canary.queries} golden queries; at most {max_drop:g} below the baseline")

    return gate


class QualityGateSpec(BaseModel, frozen=True):
    """A retrieval-quality gate as a flow parameter: the golden tenant and dataset."""

    tenant: str = Field(description="tenant holding the golden corpus under both keys")
    dataset_dir: Path = Field(description="BEIR folder of the golden queries and qrels")
    split: str = "test"
    limit_queries: int | None = Field(default=None, ge=1)
    baseline_key: str | None = Field(default=None, description="default: the platform's "
                                                               "embedding_model_key")
    candidate_key: str | None = Field(default=None, description="default: the flag's "
                                                                "embedding_model_key")
    max_ndcg_drop: float = Field(default=0.02, ge=0, lt=1)
    k: int = Field(default=50, ge=10, le=1000)


def gate_from_spec(platform: Platform, spec: QualityGateSpec) -> ExtraGate:
    """The gate a flow parameter describes (the golden set read once, here). The dataset
    folder is named by whoever runs the flow: it must lie under ``RAG_SOURCE_ROOTS``, like
    an ingestion source (the shipped ``data/`` folder does by default)."""
    folder = confine(spec.dataset_dir, platform.settings.source_roots,
                     setting="RAG_SOURCE_ROOTS")
    golden = GoldenSet.from_beir(folder, spec.split, spec.limit_queries)
    return retrieval_quality_gate(platform, spec.tenant, golden,
                                  baseline_key=spec.baseline_key,
                                  candidate_key=spec.candidate_key,
                                  max_drop=spec.max_ndcg_drop, k=spec.k)
