"""Sizes, sweeps and goal of ``rag bench index``: ``full()`` is the README run, ``quick()``
the CI-speed smoke test; :meth:`IndexBenchConfig.preset` takes the CLI's and the flow's
options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from evaluations.index.data import DataSpec

__all__ = ["BASIS_TEXT", "FORCED_EXACT", "ITERATIVE_MODES", "NOT_INSTALLED", "PHASES",
           "IndexBenchConfig"]

PHASES = ("exact", "product", "hnsw", "ivfflat", "halfvec", "binary", "hnsw_extra",
          "diskann", "partition", "plan")
NOT_INSTALLED = "not installed"
BASIS_TEXT = {"cpu": "the serving backend's CPU time per query (load-independent)",
              "wall": "wall-clock time per query in the client"}
ITERATIVE_MODES = ("off", "relaxed_order", "strict_order")
FORCED_EXACT = 1_000_000_000  # p_exact_max_rows that sends every tenant to the exact plan


class IndexBenchConfig(BaseModel, frozen=True):
    """Sizes and sweeps. ``full()`` is the README run, ``quick()`` the CI-speed smoke test."""

    vectors: int = Field(default=500_000, ge=100)
    shares: tuple[float, ...] = (0.01, 0.05, 0.10, 0.34, 0.50)
    queries_per_tenant: int = Field(default=100, ge=1)
    real_chunks: int = Field(default=9000, ge=10)
    clusters: int = Field(default=64, ge=1)
    neighbours: int = Field(default=10, ge=0)
    neighbour_scale: float = Field(default=0.7, ge=0)
    noise_scale: float = Field(default=0.35, ge=0)
    seed: int = 20261124
    database: str = Field(default="bench_index", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    keep_db: bool = False
    phases: tuple[str, ...] = PHASES
    hnsw_ef: tuple[int, ...] = (40, 100, 200, 400)
    hnsw_modes: tuple[str, ...] = ("off", "relaxed_order")
    hnsw_strict_ef: tuple[int, ...] = (100, 400)
    # other HNSW builds (m, ef_construction) beside the product's own; each costs a build of
    # several minutes at 500,000 rows on 2 cores
    extra_hnsw: tuple[tuple[int, int], ...] = ((24, 96),)
    ivf_lists: int | None = None  # None: rows / 1000 (pgvector's guidance up to 1M rows)
    ivf_probes: tuple[int, ...] = (10, 20, 40)
    ivf_modes: tuple[str, ...] = ("off", "relaxed_order")
    halfvec_ef: tuple[int, ...] = (100, 400)
    binary_candidates: tuple[int, ...] = (100, 400)
    partition_ef: tuple[int, ...] = (40, 100, 200, 400)
    partition_exact_max_rows: int = 10_000
    partition_hnsw: tuple[int, int] = (16, 64)  # (m, ef_construction) of each partition's graph
    product_ef: tuple[int, ...] = (100, 200, 400, 800)
    # phase "plan" (the product's plan of migration 0014): the own-partition threshold (None:
    # the settings' RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS) and the vectors written to measure
    # ingestion into the shared partition and into an own one
    plan_own_min_rows: int | None = Field(default=None, ge=1)
    plan_ingest_vectors: int = Field(default=2000, ge=1)
    diskann_search_list: tuple[int, ...] = (100, 200)
    cell_budget_s: float = Field(default=15.0, gt=0)
    min_queries: int = Field(default=25, ge=1)
    concurrent_queries: int = Field(default=40, ge=2)  # the QPS-2 pass: first N queries
    goal_recall: float = 0.98
    goal_p95_ms: float = 10.0
    # latency judged against the goal: "wall" = p95 of wall-clock time in the client (the
    # goal as stated: run it on a quiet machine); "cpu" = p95 of the serving backend's CPU
    # time per query (load-independent, needs the server on this machine; for a shared
    # machine), "auto" = cpu when available. Both are reported either way.
    latency_basis: Literal["auto", "cpu", "wall"] = "wall"
    maintenance_work_mem: str = "2GB"
    build_workers: int = Field(default=1, ge=0, le=8)
    size: str = "full"

    @model_validator(mode="after")
    def _check(self) -> IndexBenchConfig:
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {PHASES}")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"tenant shares must add up to 1, got {sum(self.shares)}")
        bad = set(self.hnsw_modes) - set(ITERATIVE_MODES)
        if bad:
            raise ValueError(f"unknown iterative modes {sorted(bad)}")
        m, ef_construction = self.partition_hnsw
        if not 2 <= m <= 100 or not 2 * m <= ef_construction <= 1000:
            raise ValueError(f"partition_hnsw (m, ef_construction) = {self.partition_hnsw}: "
                             "pgvector needs 2 <= m <= 100 and 2*m <= ef_construction <= 1000")
        return self

    @classmethod
    def full(cls, **overrides: Any) -> IndexBenchConfig:
        return cls(**overrides)

    @classmethod
    def preset(cls, quick: bool, **options: Any) -> IndexBenchConfig:
        """The quick or full preset with the options the CLI and the flow take: ``None``
        keeps the preset's value, lists (phases, partition_hnsw) become tuples."""
        overrides = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in options.items() if v is not None}
        return (cls.quick if quick else cls.full)(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> IndexBenchConfig:
        values: dict[str, Any] = dict(
            vectors=30_000, queries_per_tenant=10, real_chunks=600, clusters=16,
            hnsw_ef=(100,), hnsw_strict_ef=(), extra_hnsw=(), ivf_probes=(10,),
            halfvec_ef=(100,), binary_candidates=(100,), partition_ef=(100,),
            partition_exact_max_rows=1_000, product_ef=(100, 400), diskann_search_list=(100,),
            plan_own_min_rows=2_000, plan_ingest_vectors=300,
            cell_budget_s=5.0, min_queries=5, size="quick")
        values.update(overrides)
        return cls(**values)

    def data_spec(self) -> DataSpec:
        return DataSpec(vectors=self.vectors, shares=self.shares,
                        queries_per_tenant=self.queries_per_tenant, real_chunks=self.real_chunks,
                        clusters=self.clusters, neighbours=self.neighbours,
                        neighbour_scale=self.neighbour_scale, noise_scale=self.noise_scale,
                        seed=self.seed)

