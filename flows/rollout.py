"""Prefect flow ``rollout``: move a feature flag through its stages behind automatic gates.

The flag goes to its first stage (a paused rollout resumes where it was); then, at every
stage, the flow waits the soak period and has the controller judge the stage
(:class:`rag_core.ops.rollout.controller.Rollouts`): every gate passes → the next stage;
too little traffic → the stage holds for another soak period (and past ``max_hold_s`` the
rollout pauses for a person); a gate fails → the flag is rolled back to 0 % with the
evidence in its history, and the flow run fails with ``rollout_rolled_back``, which is
what an operator's alerting on failed flow runs sees. With ``approval`` the flow pauses
between stages (Prefect's ``pause_flow_run`` with typed input) until someone approves or
rejects in the UI or API; a rejection pauses the flag. ``dry_run`` judges the current
stage once and records the decision without moving the flag.

Everything the flow decides is in ``rag.feature_flag_events``, so a flow run that dies
(its worker killed) loses nothing: a new run resumes from the flag's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from evaluations.retrieval.quality_gate import QualityGateSpec, gate_from_spec
from flows._resources import platform, retry_unless_refused
from rag_core.config.rollout import RolloutPolicy
from rag_core.db.flag_cohorts import FLAG_NAME_REGEX
from rag_core.ops.rollout.controller import Rollouts
from rag_core.ops.rollout.gates import ExtraGate
from rag_core.ops.rollout.runner import RolloutSteps, run_rollout

__all__ = ["Approval", "RolloutParameters", "rollout", "steps"]


class RolloutParameters(BaseModel):
    """Which flag, and what to change in the settings' rollout policy for this run."""

    flag: str = Field(pattern=FLAG_NAME_REGEX)
    soak_s: float | None = Field(default=None, gt=0, description="seconds per stage")
    min_requests: int | None = Field(default=None, ge=1,
                                     description="questions per cohort before a gate passes")
    max_hold_s: float | None = Field(default=None, ge=0)
    approval: bool | None = Field(default=None,
                                  description="wait for a person between stages")
    dry_run: bool = Field(default=False, description="judge the current stage once, "
                                                     "move nothing")
    max_steps: int = Field(default=1000, ge=1, le=100_000,
                           description="judgements at most (a bound on the run)")
    quality_gate: QualityGateSpec | None = Field(
        default=None, description="an embedding rollout's extra gate: retrieval quality of "
                                  "the flag's model key against the current one on a golden "
                                  "set with judgements")

    def policy(self, base: RolloutPolicy) -> RolloutPolicy:
        overrides = {k: v for k, v in {
            "soak_s": self.soak_s, "min_requests": self.min_requests,
            "max_hold_s": self.max_hold_s, "approval": self.approval}.items() if v is not None}
        return base.model_copy(update=overrides)


class Approval(RunInput):
    """What a person answers between two stages."""

    approved: bool
    reason: str = ""


def _rollouts(params: RolloutParameters) -> Rollouts:
    plat = platform()
    return plat.rollouts(params.policy(plat.settings.rollout), actor="rollout flow")


@task(name="start-rollout", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_refused)
def start_rollout(params: RolloutParameters) -> dict[str, Any]:
    return _rollouts(params).start(params.flag).as_dict()


# The gates are callables (a quality gate holds its golden set): not inputs to hash.
@task(name="judge-stage", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_refused, cache_policy=NO_CACHE)
def judge_stage(params: RolloutParameters, extra_gates: Sequence[ExtraGate] = ()
                ) -> dict[str, Any]:
    return _rollouts(params).step(params.flag, extra_gates=extra_gates,
                                  dry_run=params.dry_run).as_dict()


@task(name="preview-stage", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_refused, cache_policy=NO_CACHE)
def preview_stage(params: RolloutParameters, extra_gates: Sequence[ExtraGate] = ()
                  ) -> dict[str, Any]:
    return _rollouts(params).judge(params.flag, extra_gates=extra_gates).as_dict()


@task(name="pause-rollout")
def pause_rollout(params: RolloutParameters, reason: str) -> dict[str, Any]:
    return _rollouts(params).pause(params.flag, reason=reason).as_dict()


def steps(params: RolloutParameters,
          extra_gates: Callable[[], Sequence[ExtraGate]] = tuple) -> RolloutSteps:
    """The loop's steps as this flow's tasks (each judgement a task run with retries)."""
    return RolloutSteps(start=lambda: start_rollout(params),
                        judge=lambda: judge_stage(params, extra_gates()),
                        pause=lambda reason: pause_rollout(params, reason),
                        preview=lambda: preview_stage(params, extra_gates()),
                        approve=lambda percent: _approved(params, percent),
                        log=get_run_logger())


@flow(name="rollout", log_prints=True)
def rollout(params: RolloutParameters) -> dict[str, Any]:
    """Roll ``params.flag`` out stage by stage behind the gates (see the module doc)."""
    if params.dry_run:
        decision = judge_stage(params)
        get_run_logger().info("dry run of %s at %s %%: would %s", params.flag,
                              decision["percent"], decision["would"])
        return {"flag": params.flag, "outcome": "dry_run",
                "final_percentage": decision["percent"], "stages_passed": [],
                "decisions": [decision]}
    policy = params.policy(platform().settings.rollout)
    gates: list[ExtraGate] = [] if params.quality_gate is None else \
        [gate_from_spec(platform(), params.quality_gate)]  # the golden set read once
    return run_rollout(params.flag, policy, steps(params, lambda: gates),
                       max_steps=params.max_steps)


def _approved(params: RolloutParameters, next_percent: int) -> bool:
    get_run_logger().info("waiting for approval to take %s to %s %%", params.flag,
                          next_percent)
    answer = pause_flow_run(wait_for_input=Approval, timeout=24 * 3600, poll_interval=2)
    return bool(answer is not None and answer.approved)

