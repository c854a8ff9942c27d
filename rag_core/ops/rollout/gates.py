"""The gates of a rollout stage: each compares the canary cohort with the control cohort
(or with a fixed bound) and passes, holds (too little traffic to say) or fails.

Pure functions of the measurements (:class:`CohortStats`, from
:mod:`rag_core.ops.rollout.measure`) and the policy, so that every threshold is testable
without traffic; a gate that cannot be computed from this data (a retrieval-quality gate
that needs a golden set, say) comes in as an *extra gate*: any callable returning a
:class:`GateResult` (see :data:`ExtraGate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rag_core.codes import ErrorCategory, ErrorCode
from rag_core.config.rollout import RolloutPolicy
from rag_core.db.flag_cohorts import Flag

__all__ = ["CohortStats", "ExtraGate", "GateResult", "Outcome", "evaluate_gates",
           "is_service_error"]

Outcome = Literal["pass", "hold", "fail"]
#: A gate computed elsewhere (given the flag being rolled out).
ExtraGate = Callable[[Flag], "GateResult"]

#: What counts as the service failing a question: a dependency down, a run that failed, a
#: bug. Refusals of the caller's input and limits (rate, quota) are the caller's, not the
#: variant's, and do not count.
_SERVICE_ERRORS = frozenset({ErrorCategory.UNAVAILABLE, ErrorCategory.FAILED,
                             ErrorCategory.INTERNAL})


def is_service_error(code: str) -> bool:
    try:
        return ErrorCode(code).category in _SERVICE_ERRORS
    except ValueError:  # a code this version does not know: count it, never hide it
        return True


@dataclass(frozen=True)
class CohortStats:
    """One cohort's questions in the window (from the audit log)."""

    requests: int = 0
    tenants: int = 0
    error_codes: Mapping[str, int] = field(default_factory=dict)
    p95_ms: float | None = None
    cache_hits: int = 0
    cross_tenant_rows: int = 0
    max_quota_usage: float = 0.0  # the highest share of the daily quota one tenant used

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.error_codes.items() if is_service_error(code))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def cache_hit_ratio(self) -> float:
        return self.cache_hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_codes"] = dict(self.error_codes)
        data.update(errors=self.errors, error_rate=round(self.error_rate, 6),
                    cache_hit_ratio=round(self.cache_hit_ratio, 6))
        return data


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict, with what it measured on each side and its threshold."""

    gate: str
    outcome: Outcome
    canary: float | None
    control: float | None
    threshold: float | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bound(gate: str, value: float, limit: float, control: float | None = None,
           detail: str = "") -> GateResult:
    return GateResult(gate, "pass" if value <= limit else "fail", value, control, limit,
                      detail)


def evaluate_gates(canary: CohortStats, control: CohortStats, *, percent: int,
                   policy: RolloutPolicy, breaker_open_s: float) -> list[GateResult]:
    """Every gate of the stage at ``percent``, in a fixed order (safety first). Traffic is
    checked first: with too little of it in either cohort the other gates are not judged
    (a rate over three questions says nothing) and the stage holds, unless the canary's
    errors already exceed what the threshold allows over the whole traffic floor."""
    results = [_bound("cross_tenant_rows", canary.cross_tenant_rows,
                      policy.max_cross_tenant_rows, control.cross_tenant_rows)]
    enough = min(canary.requests, control.requests)
    results.append(GateResult(
        "min_requests", "pass" if enough >= policy.min_requests else "hold",
        canary.requests, control.requests, policy.min_requests,
        "" if enough >= policy.min_requests else "too little traffic to judge the stage"))
    if enough < policy.min_requests:
        # Errors that exceed the threshold even if every question still to come succeeded
        # fail the gate now: a broken variant is not left serving its cohort until the
        # traffic floor is reached.
        limit = policy.max_error_rate_at(percent)
        if canary.errors > limit * max(policy.min_requests, canary.requests):
            results.append(GateResult(
                "error_rate", "fail", canary.error_rate, control.error_rate, limit,
                f"{canary.errors} errors before the traffic floor: above the threshold "
                "whatever the rest of the stage does"))
        return results
    results.append(_bound("error_rate", canary.error_rate, policy.max_error_rate_at(percent),
                          control.error_rate))
    canary_p95, control_p95 = canary.p95_ms or 0.0, control.p95_ms or 0.0
    results.append(_bound("p95_latency_ms", canary_p95, policy.max_p95_ms, control_p95))
    allowed = control_p95 * (1 + policy.max_p95_regression) + policy.p95_slack_ms
    results.append(_bound("p95_vs_control_ms", canary_p95, round(allowed, 3), control_p95,
                          f"control p95 x {1 + policy.max_p95_regression:g} + "
                          f"{policy.p95_slack_ms:g} ms"))
    floor = control.cache_hit_ratio - policy.max_cache_hit_drop
    results.append(GateResult(
        "cache_hit_ratio", "pass" if canary.cache_hit_ratio >= floor else "fail",
        canary.cache_hit_ratio, control.cache_hit_ratio, round(floor, 6),
        f"at most {policy.max_cache_hit_drop:g} below control"))
    results.append(_bound("breaker_open_s", breaker_open_s, policy.max_breaker_open_s))
    results.append(_bound("quota_usage", canary.max_quota_usage, policy.max_quota_usage,
                          control.max_quota_usage))
    return results


def verdict(results: list[GateResult]) -> tuple[Outcome, GateResult | None]:
    """``fail`` (with the first failed gate) if any gate failed, else ``hold`` if any held,
    else ``pass``."""
    failed = next((r for r in results if r.outcome == "fail"), None)
    if failed is not None:
        return "fail", failed
    held = next((r for r in results if r.outcome == "hold"), None)
    return ("hold", held) if held is not None else ("pass", None)
