"""The one percentile of the evaluations: linear interpolation between closest ranks.

Every latency p50/p95, throughput median and quartile the benchmarks report comes from
:func:`percentile`. The definition is Hyndman & Fan's type 7, the default of
``numpy.percentile``, ``statistics.quantiles(method="inclusive")`` and PostgreSQL's
``percentile_cont`` (which the dbt marts use for their p95), so a number means the same
wherever it appears: for sorted values ``x[0..n-1]`` the ``q``-th percentile sits at
position ``h = (n - 1) * q / 100`` and is ``x[floor h] + (h - floor h) * (x[floor h + 1] -
x[floor h])``. The median is ``percentile(values, 50)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Spread", "median", "percentile", "percentiles", "spread"]


def percentiles(values: Iterable[float], qs: Sequence[float]) -> list[float]:
    """The ``qs`` percentiles (0-100) of ``values``; NaN for each when there are none."""
    ordered = sorted(float(v) for v in values)
    result: list[float] = []
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {q}")
        if not ordered:
            result.append(math.nan)
            continue
        position = (len(ordered) - 1) * q / 100
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        result.append(ordered[low] + (position - low) * (ordered[high] - ordered[low]))
    return result


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (NaN when there are none)."""
    return percentiles(values, [q])[0]


def median(values: Iterable[float]) -> float:
    """The 50th percentile (NaN when there are no values)."""
    return percentile(values, 50)


@dataclass(frozen=True)
class Spread:
    """How a repeated measurement varied: median, extremes and quartiles."""

    median: float
    min: float
    max: float
    q1: float
    q3: float

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "q1": self.q1,
                "q3": self.q3}


def spread(values: Iterable[float], digits: int = 2) -> Spread:
    """The :class:`Spread` of ``values`` (at least one), each rounded to ``digits``."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("spread() needs at least one value")
    q1, mid, q3 = percentiles(ordered, [25, 50, 75])
    return Spread(round(mid, digits), round(ordered[0], digits), round(ordered[-1], digits),
                  round(q1, digits), round(q3, digits))
