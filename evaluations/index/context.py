"""What the stages of ``rag bench index`` share: the run's context (passed from task to
task by the flow), one strategy's measured cells, and the progress sink."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from evaluations.index.config import NOT_INSTALLED, IndexBenchConfig
from evaluations.index.data import Dataset
from evaluations.index.database import BenchDatabase
from evaluations.index.measure import CellResult
from evaluations.index.strategies import Strategy
from rag_core.config import Settings
from rag_core.errors import BenchmarkError

__all__ = ["BenchContext", "NullProgress", "ProgressSink", "StrategyResult", "by_id"]


class ProgressSink(Protocol):
    def add_total(self, count: int) -> None: ...

    def advance(self, description: str, count: int = 1) -> None: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    def add_total(self, count: int) -> None:
        pass

    def advance(self, description: str, count: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class StrategyResult:
    strategy: Strategy
    build_s: float | None
    index_mb: float | None
    cells: dict[str, CellResult]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        s = self.strategy
        return {"family": s.family, "label": s.label, "curve": s.curve, "params": s.params,
                "build_s": None if self.build_s is None else round(self.build_s, 2),
                "index_mb": self.index_mb, "note": self.note,
                "tenants": {name: cell.as_dict() for name, cell in self.cells.items()}}


@dataclass
class BenchContext:
    """Everything the stages share; passed from task to task by the flow."""

    settings: Settings
    config: IndexBenchConfig
    dataset: Dataset
    bench: BenchDatabase | None = None
    results: list[StrategyResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)  # indexes that exist right now
    diskann: str | dict[str, Any] = NOT_INSTALLED
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def require_bench(self) -> BenchDatabase:
        if self.bench is None:
            raise BenchmarkError("prepare_database has not run")
        return self.bench



def by_id(results: list[StrategyResult]) -> dict[str, StrategyResult]:
    return {r.strategy.id: r for r in results}
