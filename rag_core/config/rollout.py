"""How a rollout moves a feature flag: its stages, how long each soaks, and the gates'
thresholds (``RAG_ROLLOUT__*``; a rollout flow run may override any of them).

The defaults are the seed's: stages 5, 25, 50, 100 %; to leave the first stage the canary's
error rate must stay under 0.1 %, later under 1 %; p95 latency at most 3 s and not worse
than the control cohort's by more than a margin; no cross-tenant row blocked; the breaker
open at most 5 minutes; token-quota headroom. A gate never passes on too little traffic:
below ``min_requests`` in either cohort the stage holds, and a stage held past
``max_hold_s`` pauses the rollout for a person to look at.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RolloutPolicy"]


class RolloutPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stages: tuple[int, ...] = (5, 25, 50, 100)
    soak_s: float = Field(default=600.0, gt=0, le=7 * 86400,
                          description="seconds each stage runs before its gates are read")
    max_hold_s: float = Field(default=3600.0, ge=0,
                              description="a stage held this long (too little traffic) "
                                          "pauses the rollout")
    min_requests: int = Field(default=200, ge=1,
                              description="questions per cohort before any gate may pass")
    first_stage_max_error_rate: float = Field(default=0.001, ge=0, le=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p95_ms: float = Field(default=3000.0, gt=0)
    max_p95_regression: float = Field(
        default=0.5, ge=0, description="canary p95 <= control p95 * (1 + this) + "
                                       "p95_slack_ms")
    p95_slack_ms: float = Field(default=50.0, ge=0)
    max_cache_hit_drop: float = Field(
        default=0.5, ge=0, le=1, description="canary hit ratio >= control's - this (a new "
                                             "variant starts with a cold cache)")
    max_breaker_open_s: float = Field(default=300.0, ge=0)
    max_quota_usage: float = Field(default=0.8, gt=0, le=1,
                                   description="highest share of its daily token quota a "
                                               "canary tenant may have used")
    max_cross_tenant_rows: int = Field(default=0, ge=0)
    approval: bool = Field(default=False,
                           description="wait for a person's approval between stages")

    def max_error_rate_at(self, percent: int) -> float:
        """The error-rate threshold to leave the stage at ``percent``."""
        first = self.stages[0] if self.stages else percent
        return self.first_stage_max_error_rate if percent <= first else self.max_error_rate
