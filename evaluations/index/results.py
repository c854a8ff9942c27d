"""The typed results of ``rag bench index``. :meth:`IndexResults.as_dict` is the
``results.json`` of a run and the source of the ``--json`` summary: its keys (and their
order) are a contract."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from evaluations.index.context import StrategyResult

__all__ = ["Candidate", "FunctionConfig", "GoalSpec", "IndexResults", "LatencyFit",
           "PartitionPlan", "ProposedDefault", "Recommendation", "SearchDefaults",
           "TenantSummary"]


@dataclass(frozen=True)
class GoalSpec:
    recall_at_10: float
    p95_ms: float
    latency_basis: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """A plan composed from measured building blocks: tenants with at most
    ``threshold_covers_rows`` rows searched exactly, the others by HNSW at ``ef_search``."""

    threshold_covers_rows: int
    ef_search: int
    meets_goal: bool
    tenants_meeting_goal: int
    min_recall: float
    max_p95_ms: float
    latency_basis: str
    plans: dict[str, str]  # tenant -> "exact" | "hnsw"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FunctionConfig:
    """The best candidate as concrete settings (``exact_max_rows`` between tenant sizes)."""

    exact_max_rows: int
    ef_search: int
    composed: Candidate


@dataclass(frozen=True)
class LatencyFit:
    """Exact search's p95 as ``intercept_ms + per_row_ms * rows``."""

    intercept_ms: float
    per_row_ms: float

    def as_dict(self) -> dict[str, float]:
        return {"intercept_ms": round(self.intercept_ms, 3),
                "per_1000_rows_ms": round(self.per_row_ms * 1000, 4)}


@dataclass(frozen=True)
class SearchDefaults:
    """The product's configured search settings the run judged."""

    exact_search_max_rows: int
    hnsw_ef_search: int
    hnsw_iterative_scan: str
    hnsw_max_scan_tuples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProposedDefault:
    exact_search_max_rows: int
    hnsw_ef_search: int
    measured_meets_goal: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartitionPlan:
    """The same composition with one LIST partition per tenant."""

    candidates_meeting_goal: list[Candidate]
    best: FunctionConfig | None
    exact_p95_fit_ms: LatencyFit | None

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "candidates_meeting_goal": [c.as_dict() for c in self.candidates_meeting_goal],
            "best": None if best is None else {
                "exact_max_rows": best.exact_max_rows, "ef_search": best.ef_search,
                "max_p95_ms": best.composed.max_p95_ms,
                "min_recall": best.composed.min_recall},
            "exact_p95_fit_ms": None if self.exact_p95_fit_ms is None
            else self.exact_p95_fit_ms.as_dict(),
        }


@dataclass(frozen=True)
class Recommendation:
    goal: GoalSpec
    default: SearchDefaults
    default_failing_tenants: list[str]
    function_candidates_meeting_goal: list[Candidate]
    proposed: ProposedDefault | None
    exact_p95_fit_ms: LatencyFit | None
    strategies_meeting_goal_for_every_tenant: list[str]
    partition_per_tenant: PartitionPlan
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal.as_dict(), "default": self.default.as_dict(),
            "default_failing_tenants": list(self.default_failing_tenants),
            "function_candidates_meeting_goal": [
                c.as_dict() for c in self.function_candidates_meeting_goal],
            "proposed": None if self.proposed is None else self.proposed.as_dict(),
            "exact_p95_fit_ms": None if self.exact_p95_fit_ms is None
            else self.exact_p95_fit_ms.as_dict(),
            "strategies_meeting_goal_for_every_tenant":
                list(self.strategies_meeting_goal_for_every_tenant),
            "partition_per_tenant": self.partition_per_tenant.as_dict(),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class TenantSummary:
    name: str
    share: float
    rows: int
    queries: int
    query_kinds: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexResults:
    """One run: every strategy's cells, the builds, the verdict and how the data was made."""

    size: str
    goal: GoalSpec
    default_meets_goal: bool
    default_meets_goal_wall_clock: bool
    latency_basis: str
    diskann: str | dict[str, Any]
    tenants: list[TenantSummary]
    strategies: list[StrategyResult]
    builds: dict[str, dict[str, Any]]
    recommendation: Recommendation
    data: dict[str, Any]  # how the dataset was made (Dataset.description)
    server: dict[str, Any]
    timings_s: dict[str, float]
    config: dict[str, Any]
    notes: list[str]
    measured_as: str
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size, "goal": self.goal.as_dict(),
            "default_meets_goal": self.default_meets_goal,
            "default_meets_goal_wall_clock": self.default_meets_goal_wall_clock,
            "latency_basis": self.latency_basis, "diskann": self.diskann,
            "tenants": [t.as_dict() for t in self.tenants],
            "strategies": {r.strategy.id: r.as_dict() for r in self.strategies},
            "builds": self.builds, "recommendation": self.recommendation.as_dict(),
            "data": self.data, "server": self.server, "timings_s": dict(self.timings_s),
            "config": self.config, "notes": list(self.notes), "measured_as": self.measured_as,
            "elapsed_s": self.elapsed_s,
        }
