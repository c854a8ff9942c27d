"""What ``rag bench embeddings`` compares and how much of it it measures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from evaluations.common.paths import relative
from rag_core.config import scifact_dir
from rag_core.ingestion.chunking import ChunkingPolicy

__all__ = ["BACKENDS", "FP32", "GOALS", "INT8", "KINDS", "REFERENCE",
           "EmbeddingBenchmarkConfig"]

BACKENDS = ("fastembed", "fastembed-int8", "sentence-transformers")
REFERENCE = "sentence-transformers"
FP32 = "fastembed"
INT8 = "fastembed-int8"
KINDS = ("passages", "queries")

# (key, description, metric key in the results, comparison, target)
GOALS: tuple[tuple[str, str, str, str, float], ...] = (
    ("seed_fastembed_speedup_1.3x",
     "seed bar: FastEmbed fp32 >= 1.3x sentence-transformers texts/s (30% faster)",
     "fastembed_speedup", ">=", 1.3),
    ("fastembed_speedup_1.5x", "our goal: FastEmbed fp32 >= 1.5x sentence-transformers texts/s",
     "fastembed_speedup", ">=", 1.5),
    ("fastembed_rss_0.6x",
     "our goal: FastEmbed fp32 peak RSS <= 0.6x sentence-transformers (default batch size)",
     "fastembed_rss_ratio", "<=", 0.6),
    ("int8_speedup_2.5x", "our goal: FastEmbed int8 >= 2.5x sentence-transformers texts/s",
     "int8_speedup", ">=", 2.5),
    ("int8_ndcg_loss_0.005",
     "our goal: FastEmbed int8 loses <= 0.005 nDCG@10 against sentence-transformers",
     "int8_ndcg_loss", "<=", 0.005),
)


class EmbeddingBenchmarkConfig(BaseModel, frozen=True):
    """How much to measure. ``preset(quick=...)`` gives the two standard sizes."""

    quick: bool = False
    batch_sizes: list[int] = Field(default_factory=lambda: [8, 32, 64])
    default_batch_size: int = Field(default=32, ge=1, le=1024,
                                    description="batch size of the headline speed-ups")
    rounds: int = Field(default=5, ge=1, le=100, description="interleaved throughput rounds")
    probe_rounds: int = Field(default=1, ge=1, le=20, description=(
        "rounds of fresh processes (one per backend and batch size) for cold load and "
        "peak RSS"))
    passages: int = Field(default=240, ge=1, description="chunk texts in the throughput set")
    queries: int = Field(default=80, ge=1, description="query texts in the throughput set")
    long_texts: int = Field(default=64, ge=0,
                            description="abstracts longer than the window, for agreement")
    eval_queries: int | None = Field(default=None, ge=1,
                                     description="SciFact test queries for nDCG (None = all)")
    distractors: int | None = Field(default=None, ge=0,
                                    description="unjudged docs added (None = whole corpus)")
    warmup_texts: int = Field(default=32, ge=1)
    settle_s: float = Field(default=0.25, ge=0,
                            description="pause between measurements (idle thread pools sleep)")
    seed: int = 13
    dataset_dir: Path = Field(default_factory=scifact_dir)
    chunking: ChunkingPolicy = Field(default_factory=ChunkingPolicy)
    backends: tuple[str, ...] = BACKENDS
    request_timeout_s: float = Field(default=3600.0, gt=0)

    @field_validator("batch_sizes")
    @classmethod
    def _valid_batch_sizes(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 or b > 1024 for b in value):
            raise ValueError("batch sizes must be between 1 and 1024")
        return sorted(set(value))

    @field_validator("backends")
    @classmethod
    def _valid_backends(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if set(value) != set(BACKENDS) or len(value) != len(BACKENDS):
            raise ValueError(f"the benchmark compares exactly {', '.join(BACKENDS)}")
        return value

    @model_validator(mode="after")
    def _default_is_measured(self) -> Self:
        if self.default_batch_size not in self.batch_sizes:
            object.__setattr__(self, "batch_sizes",
                               sorted({*self.batch_sizes, self.default_batch_size}))
        return self

    @classmethod
    def preset(cls, quick: bool = False, **overrides: Any) -> EmbeddingBenchmarkConfig:
        """Full mode (all 300 queries over the whole corpus, 5 rounds) or quick mode."""
        values: dict[str, Any] = {"quick": quick}
        if quick:
            values.update(rounds=3, probe_rounds=1, passages=96, queries=32, long_texts=16,
                          eval_queries=50, distractors=300)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def full_retrieval(self) -> bool:
        return self.eval_queries is None and self.distractors is None

    def describe(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["dataset_dir"] = relative(self.dataset_dir)
        return data
