"""From measurements to :class:`~evaluations.embeddings.results.EmbeddingResults`: the
tables, the headline ratios at the default batch size, and which goals hold."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from evaluations.common.stats import median, spread
from evaluations.embeddings.config import FP32, GOALS, INT8, REFERENCE, EmbeddingBenchmarkConfig
from evaluations.embeddings.measure import LoadSample, WarmResult
from evaluations.embeddings.results import (
    EmbeddingResults,
    Goal,
    Goals,
    LoadDetail,
    RetrievalQuality,
    SpeedupRow,
)
from evaluations.embeddings.scoring import agreement, retrieval, speedup_table, throughput_table
from evaluations.embeddings.workload import Workload
from rag_core.errors import BenchmarkError

__all__ = ["judge_goals", "summarize"]

MIB = 2 ** 20
_SPEEDUP_BACKEND = {"fastembed_speedup": FP32, "int8_speedup": INT8}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def judge_goals(headline: Mapping[str, float], speedups: list[SpeedupRow],
                default_batch_size: int, quick: bool) -> Goals:
    """Each of :data:`GOALS` against the ``headline`` numbers (keyed as in the results); a
    speed-up goal also says whether it held in the worst round."""
    every_round_min = {row.backend: row.speedup.min for row in speedups
                       if row.kind == "all" and row.batch_size == default_batch_size}
    goals: dict[str, Goal] = {}
    held: list[str] = []
    missed: list[str] = []
    for key, description, metric, op, target in GOALS:
        value = headline[metric]
        holds = bool(value >= target if op == ">=" else value <= target)
        worst = every_round_min[_SPEEDUP_BACKEND[metric]] \
            if metric in _SPEEDUP_BACKEND else None
        goals[key] = Goal(
            description=description, metric=metric, target=f"{op} {target}", measured=value,
            holds=holds, holds_in_every_round=None if worst is None else bool(worst >= target),
            worst_round=worst,
            note="quick mode: nDCG on a query subset with few distractors"
            if metric == "int8_ndcg_loss" and quick else None)
        (held if holds else missed).append(key)
    summary = "; ".join([f"HOLDS {k} ({_fmt(goals[k].measured)})" for k in held]
                        + [f"MISSED {k} ({_fmt(goals[k].measured)})" for k in missed])
    return Goals(goals, goals["int8_speedup_2.5x"].holds and goals["int8_ndcg_loss_0.005"].holds,
                 held, missed, summary)


def summarize(config: EmbeddingBenchmarkConfig, workload: Workload,
              loads: list[LoadSample], warm: WarmResult,
              elapsed_s: float | None = None) -> EmbeddingResults:
    """Everything ``results.json`` and ``--json`` carry, including the goals."""
    throughput = throughput_table(config, warm.samples)
    speedups = speedup_table(config, warm.samples)
    cosines = agreement(config, workload, warm)
    quality = retrieval(config, workload, warm)
    all_loads = loads + warm.load_samples
    backends = config.backends

    def headline(backend: str) -> float:
        for row in speedups:
            if (row.backend, row.batch_size, row.kind) == \
                    (backend, config.default_batch_size, "all"):
                return float(row.speedup.median)
        raise BenchmarkError(f"no speed-up measured for {backend}", value=backend)

    # peak RSS of a fresh process embedding two batches of the longest chunks, per batch size
    peak_by_batch = {b: {bs: round(median([s.peak_rss_bytes / MIB for s in loads
                                           if s.backend == b and s.batch_size == bs
                                           and s.peak_rss_bytes is not None]), 1)
                         for bs in config.batch_sizes} for b in backends}
    peak_mb = {b: peak_by_batch[b][config.default_batch_size] for b in backends}
    load_rss_mb = {b: round(median([s.load_rss_bytes / MIB for s in all_loads
                                    if s.backend == b]), 1) for b in backends}
    load_detail: dict[str, LoadDetail] = {}
    for backend in backends:
        mine = [s for s in all_loads if s.backend == backend]
        load_detail[backend] = LoadDetail(
            startup_s=spread([s.startup_s for s in mine]),
            import_s=round(median([s.import_s for s in mine]), 3),
            model_load_s=round(median([s.load_s for s in mine]), 3),
            first_embed_s=round(median([s.first_embed_s for s in mine]), 3),
            samples=len(mine))
    ndcg = {b: quality[b]["ndcg@10"] for b in backends}
    recall_key = next(k for k in quality[REFERENCE] if k.startswith("recall@"))
    numbers = {"fastembed_speedup": headline(FP32), "int8_speedup": headline(INT8),
               "fastembed_rss_ratio": round(peak_mb[FP32] / peak_mb[REFERENCE], 3),
               "int8_ndcg_loss": round(ndcg[REFERENCE] - ndcg[INT8], 5)}
    return EmbeddingResults(
        mode="quick" if config.quick else "full",
        default_batch_size=config.default_batch_size, batch_sizes=list(config.batch_sizes),
        backends=list(backends), reference_backend=REFERENCE,
        fastembed_speedup=numbers["fastembed_speedup"], int8_speedup=numbers["int8_speedup"],
        fastembed_rss_ratio=numbers["fastembed_rss_ratio"],
        int8_rss_ratio=round(peak_mb[INT8] / peak_mb[REFERENCE], 3),
        min_cosine=round(cosines[FP32]["all"].min, 6),
        mean_cosine=round(cosines[FP32]["all"].mean, 6),
        int8_min_cosine=round(cosines[INT8]["all"].min, 6),
        int8_mean_cosine=round(cosines[INT8]["all"].mean, 6),
        ndcg_at_10=ndcg, recall_key=recall_key,
        recall={b: quality[b][recall_key] for b in backends},
        int8_ndcg_loss=numbers["int8_ndcg_loss"],
        fastembed_ndcg_loss=round(ndcg[REFERENCE] - ndcg[FP32], 5),
        load_s={b: load_detail[b].startup_s.median for b in backends},
        load=load_detail, load_rss_mb=load_rss_mb, peak_rss_mb=peak_mb,
        peak_rss_mb_by_batch=peak_by_batch,
        rss_ratio_by_batch={b: {bs: round(peak_by_batch[b][bs] / peak_by_batch[REFERENCE][bs],
                                          3) for bs in config.batch_sizes}
                            for b in backends if b != REFERENCE},
        peak_rss_mb_throughput_worker={b: round(v / MIB, 1)
                                       for b, v in warm.peak_rss_bytes.items()},
        peak_rss_mb_after_retrieval={b: round(v / MIB, 1)
                                     for b, v in warm.final_peak_rss_bytes.items()},
        throughput=throughput, speedups=speedups, agreement=cosines,
        retrieval=RetrievalQuality(
            scores=quality, eval_set=workload.eval_set,
            corpus_docs_per_s={b: round(len(workload.eval_docs.texts) / s, 2)
                               for b, s in warm.corpus_embed_s.items()},
            note=("whole SciFact test split" if config.full_retrieval else
                  "quick subset: judged docs of the sampled queries plus "
                  "distractors; not comparable to the full-corpus nDCG")),
        workload=dict(workload.description), model_versions=warm.model_versions,
        load_average=warm.load_average, cpus=os.cpu_count(), config=config.describe(),
        goals=judge_goals(numbers, speedups, config.default_batch_size, config.quick),
        elapsed_s=None if elapsed_s is None else round(elapsed_s, 1))
