"""How hybrid retrieval fuses its two rankings (``RAG_HYBRID__*``): weighted reciprocal-rank
fusion of the dense (pgvector) and full-text (tsvector) lists.

A chunk's fused score is ``dense_weight / (rrf_k + dense rank) + text_weight / (rrf_k + text
rank)`` (a list that does not rank it adds nothing); each search fetches its own number of
candidates. A weight of 0 switches its list off (its search is not run), so ``text_weight=0``
is the dense ranking. The defaults (constant 10, 100 candidates a side, text weight 0.5) are
the best point of the grid on NFCorpus train (+0.008 nDCG@10 over the paper's constant 60 with
equal weights), and the gain held where they were not tuned: +0.001 on NFCorpus dev, +0.014
on SciFact test (0.694 -> 0.708; README, "Benchmarks"; ``rag eval fusion-grid`` reproduces
the grids).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["HybridPolicy"]


class HybridPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rrf_k: int = Field(default=10, ge=0, le=10_000,
                       description="the RRF constant: larger flattens the rank differences")
    dense_candidates: int = Field(default=100, ge=1, le=1000,
                                  description="chunks the dense search fetches (at least k)")
    text_candidates: int = Field(default=100, ge=1, le=1000,
                                 description="chunks the full-text search fetches (at least k)")
    dense_weight: float = Field(default=1.0, ge=0, le=100)
    text_weight: float = Field(default=0.5, ge=0, le=100)

    @model_validator(mode="after")
    def _one_list_counts(self) -> HybridPolicy:
        if self.dense_weight == 0 and self.text_weight == 0:
            raise ValueError("dense_weight and text_weight cannot both be 0")
        return self
