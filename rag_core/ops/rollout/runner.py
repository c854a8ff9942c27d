"""The loop of a rollout: start, then soak and judge each stage until the flag completes,
is rolled back, or pauses (too long on too little traffic, or not approved).

One loop for every way of running a rollout: the Prefect flow ``rollout`` (flows/rollout.py)
passes its tasks as the steps, so each judgement is a task run with its retries; ``rag
rollout start --watch`` passes the controller's methods directly. The loop keeps no state
of its own beyond the current run: the flag's row and history hold every decision, so a
run that dies is resumed by starting another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag_core.config.rollout import RolloutPolicy
from rag_core.errors import RolloutRolledBackError

__all__ = ["RolloutSteps", "run_rollout"]

_log = logging.getLogger(__name__)

Json = dict[str, Any]


@dataclass
class RolloutSteps:
    """What the loop calls. ``judge`` decides and acts, returning the decision as a dict
    (:meth:`~rag_core.ops.rollout.controller.Decision.as_dict`); when the policy wants
    approval, ``preview`` decides without acting and ``approve`` is asked before a move to
    the next stage (a refusal pauses the flag where it is)."""

    start: Callable[[], Json]
    judge: Callable[[], Json]
    pause: Callable[[str], Json]
    preview: Callable[[], Json] | None = None  # judge without acting (before an approval)
    approve: Callable[[int], bool] = lambda _percent: True
    sleep: Callable[[float], None] = time.sleep
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: _log)


def run_rollout(flag: str, policy: RolloutPolicy, steps: RolloutSteps, *,
                max_steps: int = 1000) -> Json:
    """Run the rollout of ``flag``; returns its summary (``outcome`` complete or paused,
    ``final_percentage``, ``stages_passed``, ``decisions``). A failed gate rolls the flag
    back (the controller did) and raises :class:`RolloutRolledBackError`, whose
    ``summary`` attribute holds the same summary."""
    log = steps.log
    started = steps.start()
    log.info("rollout of %s at %s %% (stages %s)", flag, started["percent"], started["stages"])
    decisions: list[Json] = []
    passed: list[int] = []
    held_s = 0.0
    for _ in range(max_steps):
        steps.sleep(policy.soak_s)
        if policy.approval and steps.preview is not None:
            preview = steps.preview()
            nxt = int(preview["next_percent"])
            if preview["action"] in ("advance", "complete") and not steps.approve(nxt):
                steps.pause(f"the move to {nxt} % was not approved")
                decisions.append(preview)
                return _summary(flag, "paused", int(preview["percent"]), passed, decisions)
        decision = steps.judge()
        decisions.append(decision)
        action, percent = decision["action"], int(decision["percent"])
        log.info("%s at %s %%: %s", flag, percent, action)
        if action == "rollback":
            gate = str(decision["failed_gate"])
            values: Json = next((g for g in decision["gates"] if g["gate"] == gate), {})
            log.error("rollout of %s rolled back at %s %%: gate %s failed: %s", flag, percent,
                      gate, values)
            error = RolloutRolledBackError(flag, gate, percent)
            error.summary = _summary(flag, "rolled_back", 0, passed, decisions)
            raise error
        if action == "hold":
            held_s += policy.soak_s
            if held_s >= policy.max_hold_s:
                steps.pause(f"held {held_s:.0f} s on too little traffic")
                return _summary(flag, "paused", percent, passed, decisions)
            continue
        held_s = 0.0
        passed.append(percent)
        if action == "complete":
            return _summary(flag, "complete", 100, passed, decisions)
    paused = steps.pause(f"stopped after {max_steps} judgements")
    return _summary(flag, "paused", int(paused["percent"]), passed, decisions)


def _summary(flag: str, outcome: str, percent: int, passed: list[int],
             decisions: list[Json]) -> Json:
    return {"flag": flag, "outcome": outcome, "final_percentage": percent,
            "stages_passed": passed, "decisions": decisions}
