"""The typed results of ``rag bench embeddings``. :meth:`EmbeddingResults.as_dict` is what
``results.json`` and ``--json`` carry: its keys (and their order) are a contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluations.common.stats import Spread
from evaluations.embeddings.measure import LoadSnapshot
from evaluations.embeddings.workload import EvalSet

__all__ = ["CosineStats", "EmbeddingResults", "Goal", "Goals", "LoadDetail",
           "RetrievalQuality", "SpeedupRow", "ThroughputRow"]


@dataclass(frozen=True)
class ThroughputRow:
    """One (backend, batch size, text kind) cell over the rounds; kind ``all`` is both."""

    backend: str
    batch_size: int
    kind: str
    texts: int
    tokens: int
    rounds: int
    texts_per_s: Spread
    tokens_per_s: Spread
    # CPU seconds per wall second: ~threads when the worker had the cores to itself, lower
    # when other processes took them
    cpu_per_wall: float

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "batch_size": self.batch_size, "kind": self.kind,
                "texts": self.texts, "tokens": self.tokens, "rounds": self.rounds,
                "texts_per_s": self.texts_per_s.as_dict(),
                "tokens_per_s": self.tokens_per_s.as_dict(), "cpu_per_wall": self.cpu_per_wall}


@dataclass(frozen=True)
class SpeedupRow:
    """Per-round texts/s ratio against the reference backend, in one cell."""

    backend: str
    batch_size: int
    kind: str
    speedup: Spread

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "batch_size": self.batch_size, "kind": self.kind,
                "speedup": self.speedup.as_dict()}


@dataclass(frozen=True)
class CosineStats:
    n: int
    min: float
    mean: float

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "min": self.min, "mean": self.mean}


@dataclass(frozen=True)
class LoadDetail:
    """Cold load of one backend over its fresh processes (medians)."""

    startup_s: Spread
    import_s: float
    model_load_s: float
    first_embed_s: float
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {"startup_s": self.startup_s.as_dict(), "import_s": self.import_s,
                "model_load_s": self.model_load_s, "first_embed_s": self.first_embed_s,
                "samples": self.samples}


@dataclass(frozen=True)
class RetrievalQuality:
    scores: dict[str, dict[str, float]]  # backend -> {"ndcg@10": .., "recall@100": ..}
    eval_set: EvalSet
    corpus_docs_per_s: dict[str, float]
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"scores": {b: dict(s) for b, s in self.scores.items()},
                **self.eval_set.as_dict(), "corpus_docs_per_s": dict(self.corpus_docs_per_s),
                "note": self.note}


@dataclass(frozen=True)
class Goal:
    """One goal of :data:`~evaluations.embeddings.config.GOALS`, judged."""

    description: str
    metric: str
    target: str
    measured: float
    holds: bool
    holds_in_every_round: bool | None = None  # speed-up goals only, like worst_round
    worst_round: float | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"description": self.description, "metric": self.metric,
                                "target": self.target, "measured": self.measured,
                                "holds": self.holds}
        if self.holds_in_every_round is not None:
            data |= {"holds_in_every_round": self.holds_in_every_round,
                     "worst_round": self.worst_round}
        if self.note is not None:
            data["note"] = self.note
        return data


@dataclass(frozen=True)
class Goals:
    goals: dict[str, Goal]
    int8_goal: bool  # int8 speed-up AND nDCG loss both hold
    held: list[str]
    missed: list[str]
    summary: str

    def as_dict(self) -> dict[str, Any]:
        return {**{k: g.as_dict() for k, g in self.goals.items()},
                "int8_goal": {"description": "int8 >= 2.5x AND nDCG@10 loss <= 0.005",
                              "holds": self.int8_goal},
                "held": list(self.held), "missed": list(self.missed), "summary": self.summary}


@dataclass(frozen=True)
class EmbeddingResults:
    """Everything one run measured; headline ratios are at the default batch size."""

    mode: str
    default_batch_size: int
    batch_sizes: list[int]
    backends: list[str]
    reference_backend: str
    fastembed_speedup: float
    int8_speedup: float
    fastembed_rss_ratio: float
    int8_rss_ratio: float
    min_cosine: float
    mean_cosine: float
    int8_min_cosine: float
    int8_mean_cosine: float
    ndcg_at_10: dict[str, float]
    recall_key: str  # "recall@100"
    recall: dict[str, float]
    int8_ndcg_loss: float
    fastembed_ndcg_loss: float
    load_s: dict[str, float]
    load: dict[str, LoadDetail]
    load_rss_mb: dict[str, float]
    peak_rss_mb: dict[str, float]
    peak_rss_mb_by_batch: dict[str, dict[int, float]]
    rss_ratio_by_batch: dict[str, dict[int, float]]
    peak_rss_mb_throughput_worker: dict[str, float]
    peak_rss_mb_after_retrieval: dict[str, float]
    throughput: list[ThroughputRow]
    speedups: list[SpeedupRow]
    agreement: dict[str, dict[str, CosineStats]]
    retrieval: RetrievalQuality
    workload: dict[str, Any]
    model_versions: dict[str, str]
    load_average: list[LoadSnapshot]
    cpus: int | None  # of the machine, beside its load average
    config: dict[str, Any]
    goals: Goals
    elapsed_s: float | None = None

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def throughput_row(self, backend: str, batch_size: int, kind: str = "all") -> ThroughputRow:
        return next(r for r in self.throughput
                    if (r.backend, r.batch_size, r.kind) == (backend, batch_size, kind))

    def speedup_row(self, backend: str, batch_size: int, kind: str = "all") -> SpeedupRow:
        return next(r for r in self.speedups
                    if (r.backend, r.batch_size, r.kind) == (backend, batch_size, kind))

    def load_average_summary(self) -> dict[str, Any]:
        one_minute = [la.one for la in self.load_average]
        return {"samples": [la.as_dict() for la in self.load_average],
                "max_1m": max(one_minute), "min_1m": min(one_minute),
                "cpus": self.cpus}

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode, "default_batch_size": self.default_batch_size,
            "batch_sizes": list(self.batch_sizes), "backends": list(self.backends),
            "reference_backend": self.reference_backend,
            "fastembed_speedup": self.fastembed_speedup, "int8_speedup": self.int8_speedup,
            "fastembed_rss_ratio": self.fastembed_rss_ratio,
            "int8_rss_ratio": self.int8_rss_ratio,
            "min_cosine": self.min_cosine, "mean_cosine": self.mean_cosine,
            "int8_min_cosine": self.int8_min_cosine, "int8_mean_cosine": self.int8_mean_cosine,
            "ndcg@10": dict(self.ndcg_at_10), self.recall_key: dict(self.recall),
            "int8_ndcg_loss": self.int8_ndcg_loss,
            "fastembed_ndcg_loss": self.fastembed_ndcg_loss,
            "load_s": dict(self.load_s),
            "load": {b: d.as_dict() for b, d in self.load.items()},
            "load_rss_mb": dict(self.load_rss_mb), "peak_rss_mb": dict(self.peak_rss_mb),
            "peak_rss_mb_by_batch": {b: dict(v) for b, v in self.peak_rss_mb_by_batch.items()},
            "rss_ratio_by_batch": {b: dict(v) for b, v in self.rss_ratio_by_batch.items()},
            "peak_rss_mb_throughput_worker": dict(self.peak_rss_mb_throughput_worker),
            "peak_rss_mb_after_retrieval": dict(self.peak_rss_mb_after_retrieval),
            "throughput": [r.as_dict() for r in self.throughput],
            "speedups": [r.as_dict() for r in self.speedups],
            "agreement": {b: {name: c.as_dict() for name, c in sets.items()}
                          for b, sets in self.agreement.items()},
            "retrieval": self.retrieval.as_dict(),
            "workload": dict(self.workload), "model_versions": dict(self.model_versions),
            "load_average": self.load_average_summary(),
            "config": dict(self.config),
        }
        if self.elapsed_s is not None:
            data["elapsed_s"] = self.elapsed_s
        data["goals"] = self.goals.as_dict()
        return data
