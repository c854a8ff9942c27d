"""Scoring of ``rag bench embeddings``: throughput and speed-up tables from the samples,
cosine agreement with the reference vectors, and nDCG@10 with exact cosine in numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from evaluations.common.metrics import evaluate_run
from evaluations.common.stats import median, spread
from evaluations.embeddings.config import KINDS, REFERENCE, EmbeddingBenchmarkConfig
from evaluations.embeddings.measure import Sample, WarmResult
from evaluations.embeddings.results import CosineStats, SpeedupRow, ThroughputRow
from evaluations.embeddings.workload import Workload

__all__ = ["agreement", "retrieval", "speedup_table", "throughput_table"]

FloatMatrix = npt.NDArray[np.float32]


def _cell_samples(samples: list[Sample], backend: str, batch_size: int,
                  kind: str) -> dict[int, tuple[float, int, int, float]]:
    """Per round: (seconds, texts, tokens, cpu seconds) of one cell; kind ``all`` sums both
    kinds."""
    per_round: dict[int, tuple[float, int, int, float]] = {}
    for s in samples:
        if s.backend != backend or s.batch_size != batch_size or kind not in (s.kind, "all"):
            continue
        seconds, texts, tokens, cpu_s = per_round.get(s.round, (0.0, 0, 0, 0.0))
        per_round[s.round] = (seconds + s.seconds, texts + s.texts, tokens + s.tokens,
                              cpu_s + s.cpu_s)
    return per_round


def throughput_table(config: EmbeddingBenchmarkConfig,
                     samples: list[Sample]) -> list[ThroughputRow]:
    rows = []
    for backend in config.backends:
        for batch_size in config.batch_sizes:
            for kind in ("all", *KINDS):
                cell = _cell_samples(samples, backend, batch_size, kind)
                if not cell:
                    continue
                first = next(iter(cell.values()))
                rows.append(ThroughputRow(
                    backend=backend, batch_size=batch_size, kind=kind, texts=first[1],
                    tokens=first[2], rounds=len(cell),
                    texts_per_s=spread([t / s for s, t, _, _ in cell.values()]),
                    tokens_per_s=spread([k / s for s, _, k, _ in cell.values()], 0),
                    cpu_per_wall=round(median(c / s for s, _, _, c in cell.values()), 2)))
    return rows


def speedup_table(config: EmbeddingBenchmarkConfig, samples: list[Sample]) -> list[SpeedupRow]:
    """Per-round ratio of texts/s against the reference in the same round, per cell."""
    rows = []
    for backend in config.backends:
        if backend == REFERENCE:
            continue
        for batch_size in config.batch_sizes:
            for kind in ("all", *KINDS):
                mine = _cell_samples(samples, backend, batch_size, kind)
                ref = _cell_samples(samples, REFERENCE, batch_size, kind)
                # same texts in both, so the texts/s ratio is the inverse ratio of seconds
                ratios = [ref[r][0] / mine[r][0] for r in mine if r in ref]
                if ratios:
                    rows.append(SpeedupRow(backend, batch_size, kind, spread(ratios, 3)))
    return rows


def _cosines(a: FloatMatrix, b: FloatMatrix) -> npt.NDArray[np.float64]:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    dots = np.einsum("ij,ij->i", a64, b64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    result: npt.NDArray[np.float64] = dots / np.where(norms == 0, 1.0, norms)
    return result


def _stats(cos: npt.NDArray[np.float64]) -> CosineStats:
    return CosineStats(int(cos.size), float(cos.min()), float(cos.mean()))


def agreement(config: EmbeddingBenchmarkConfig, workload: Workload,
              warm: WarmResult) -> dict[str, dict[str, CosineStats]]:
    """Cosine with the reference vectors, per backend and text set, plus ``all``."""
    names = ("passages", "queries", "long_texts", "eval_docs", "eval_queries")
    result: dict[str, dict[str, CosineStats]] = {}
    reference = warm.vectors[REFERENCE]
    for backend in config.backends:
        if backend == REFERENCE:
            continue
        per_set: dict[str, CosineStats] = {}
        every: list[npt.NDArray[np.float64]] = []
        for name in names:
            if name not in warm.vectors[backend]:
                continue
            cos = _cosines(np.load(warm.vectors[backend][name]), np.load(reference[name]))
            every.append(cos)
            per_set[name] = _stats(cos)
        per_set["all"] = _stats(np.concatenate(every))
        result[backend] = per_set
    return result


def retrieval(config: EmbeddingBenchmarkConfig, workload: Workload, warm: WarmResult,
              top_k: int = 100) -> dict[str, dict[str, float]]:
    """nDCG@10 and recall@100 per backend: exact cosine in numpy, metrics from
    :func:`evaluations.common.metrics.evaluate_run` (ranx, same conventions as ``rag
    eval``)."""
    doc_ids = np.array(workload.eval_doc_ids)
    k = min(top_k, len(doc_ids))
    scores: dict[str, dict[str, float]] = {}
    for backend in config.backends:
        docs = np.load(warm.vectors[backend]["eval_docs"])
        queries = np.load(warm.vectors[backend]["eval_queries"])
        similarity = queries @ docs.T  # unit vectors: dot product = cosine
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        run: dict[str, dict[str, float]] = {}
        for row, query_id in enumerate(workload.eval_query_ids):
            run[query_id] = {str(doc_ids[j]): float(similarity[row, j]) for j in top[row]}
        recall = f"recall@{top_k}"  # with fewer docs than top_k every doc is ranked
        metrics = evaluate_run(workload.qrels, run, ["ndcg@10", recall]).metrics
        scores[backend] = {"ndcg@10": round(float(metrics["ndcg@10"]), 5),
                           recall: round(float(metrics[recall]), 5)}
    return scores
