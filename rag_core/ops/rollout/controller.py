"""The moves of a canary rollout: start, judge a stage, advance, pause, roll back.

A stage's window starts when the flag last moved (``updated_at``: every transition sets
it), so canary and control are compared over the same minutes, at the current percentage
only. :meth:`Rollouts.step` is one decision: measure both cohorts
(:mod:`rag_core.ops.rollout.measure`), run the gates (:mod:`rag_core.ops.rollout.gates`,
plus any extra gate such as retrieval quality), then

- every gate passes: the next stage (or ``complete`` at 100 %);
- a gate holds (too little traffic): nothing moves, a ``gate_held`` event is recorded;
- a gate fails: the flag goes to 0 % (``rolled_back``, which reaches nobody), the event
  records the failed gate and both cohorts' measured values, and an error is logged for
  the alerting pipeline to pick up.

With ``dry_run`` the decision is computed and recorded as a ``dry_run`` event, and the
flag does not move. Every move is checked against the state it was read in under the
flag row's lock (:meth:`~rag_core.db.feature_flags.FlagStore.transition`), so two
controllers on one flag cannot both advance it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rag_core.config.rollout import RolloutPolicy
from rag_core.db.feature_flags import AdminConnector, FlagStore
from rag_core.db.flag_cohorts import Flag
from rag_core.errors import FlagStateError
from rag_core.ops.embedding_coverage import embedding_coverage_gate
from rag_core.ops.rollout.gates import ExtraGate, GateResult, evaluate_gates, verdict
from rag_core.ops.rollout.measure import CohortMeasurement, measure_cohorts
from rag_core.ops.rollout.runner import RolloutSteps

__all__ = ["Decision", "Rollouts"]

_log = logging.getLogger(__name__)

Action = Literal["advance", "complete", "hold", "rollback", "dry_run"]
_STARTABLE = {"off", "rolled_back", "paused"}
_JUDGED = {"rolling", "paused"}


@dataclass(frozen=True)
class Decision:
    """What one look at a stage decided, and on what evidence."""

    flag: str
    percent: int  # the stage that was judged
    action: Action
    next_percent: int
    gates: list[GateResult] = field(default_factory=list)
    measured: CohortMeasurement | None = None
    failed_gate: str | None = None
    would: Action | None = None  # a dry run's decision

    def as_dict(self) -> dict[str, Any]:
        return {"flag": self.flag, "percent": self.percent, "action": self.action,
                "next_percent": self.next_percent, "failed_gate": self.failed_gate,
                "would": self.would, "gates": [g.as_dict() for g in self.gates],
                "measured": None if self.measured is None else self.measured.as_dict()}


class Rollouts:
    """Moves flags of ``flags`` through ``policy``'s stages (as ``actor`` in their history).
    ``tokens_per_day`` is the quota the headroom gate measures usage against."""

    def __init__(self, flags: FlagStore, admin: AdminConnector, *, policy: RolloutPolicy,
                 tokens_per_day: int, actor: str = "rag rollout") -> None:
        self.flags = flags
        self.policy = policy
        self._admin = admin
        self._tokens_per_day = tokens_per_day
        self._actor = actor
        # Judged on every stage of every flag (it passes flags that switch no model key):
        # a cohort routed to a key without its vectors gets empty searches, which no other
        # gate counts as an error.
        self._builtin_gates: tuple[ExtraGate, ...] = (embedding_coverage_gate(admin),)

    def start(self, name: str, *, reason: str = "rollout started") -> Flag:
        """The flag at its first stage (a paused rollout resumes at its percentage)."""
        flag = self.flags.get(name)
        if flag.state == "paused":
            return self.flags.transition(name, state="rolling", percent=flag.percent,
                                         action="resume", actor=self._actor, reason=reason,
                                         from_states={"paused"})
        if flag.state == "rolling":
            return flag
        stages = self._stages(flag)
        return self.flags.transition(name, state="rolling", percent=stages[0],
                                     action="start", actor=self._actor, reason=reason,
                                     from_states=_STARTABLE,
                                     details={"stages": list(stages)})

    def measure(self, flag: Flag) -> CohortMeasurement:
        since = flag.updated_at or datetime.now(UTC)
        return measure_cohorts(self._admin, flag.name, since,
                               tokens_per_day=self._tokens_per_day)

    def judge(self, name: str, *, extra_gates: Sequence[ExtraGate] = ()) -> Decision:
        """The decision for the flag's current stage, without acting on it."""
        flag = self.flags.get(name)
        if flag.state not in _JUDGED:
            raise FlagStateError(name, flag.state, "judging a stage", sorted(_JUDGED))
        measured = self.measure(flag)
        gates = evaluate_gates(measured.canary, measured.control, percent=flag.percent,
                               policy=self.policy, breaker_open_s=measured.breaker_open_s)
        if not any(g.outcome == "fail" for g in gates):
            gates += [gate(flag) for gate in (*self._builtin_gates, *extra_gates)]
        outcome, deciding = verdict(gates)
        nxt = self._next(flag)
        if outcome == "fail":
            action: Action = "rollback"
            target = 0
        elif outcome == "hold" or flag.state == "paused":
            action, target = "hold", flag.percent
        else:
            action, target = ("complete" if nxt == 100 else "advance"), nxt
        return Decision(name, flag.percent, action, target, gates, measured,
                        deciding.gate if outcome == "fail" and deciding else None)

    def step(self, name: str, *, extra_gates: Sequence[ExtraGate] = (),
             dry_run: bool = False) -> Decision:
        """Judge the current stage and act on it (see the module doc)."""
        decision = self.judge(name, extra_gates=extra_gates)
        evidence = decision.as_dict()
        if dry_run:
            self.flags.record(name, action="dry_run", actor=self._actor,
                              reason=f"would {decision.action}", details=evidence)
            return Decision(name, decision.percent, "dry_run", decision.percent,
                            decision.gates, decision.measured, decision.failed_gate,
                            would=decision.action)
        if decision.action == "rollback":
            self.rollback(name, reason=f"gate {decision.failed_gate} failed",
                          details=evidence)
        elif decision.action == "hold":
            held = next((g for g in decision.gates if g.outcome == "hold"), None)
            self.flags.record(name, action="gate_held", actor=self._actor,
                              reason=held.detail if held else "paused", details=evidence)
        else:
            self.flags.transition(name, state="complete" if decision.action == "complete"
                                  else "rolling", percent=decision.next_percent,
                                  action=decision.action, actor=self._actor,
                                  reason="every gate passed", details=evidence,
                                  from_states={"rolling"})
        return decision

    def advance(self, name: str, *, force: bool = False, reason: str = "",
                extra_gates: Sequence[ExtraGate] = ()) -> Decision:
        """A person's advance: judged like a step; ``force`` moves on even when a gate holds
        or fails (recorded as ``forced_advance`` with the gates' values)."""
        if not force:
            return self.step(name, extra_gates=extra_gates)
        flag = self.flags.get(name)
        if flag.state not in _JUDGED:
            raise FlagStateError(name, flag.state, "advance", sorted(_JUDGED))
        decision = self.judge(name, extra_gates=extra_gates)
        nxt = self._next(flag)
        self.flags.transition(name, state="complete" if nxt == 100 else "rolling",
                              percent=nxt, action="forced_advance", actor=self._actor,
                              reason=reason or "forced by an operator",
                              details=decision.as_dict(), from_states=_JUDGED)
        return Decision(name, flag.percent, "complete" if nxt == 100 else "advance", nxt,
                        decision.gates, decision.measured, decision.failed_gate)

    def pause(self, name: str, *, reason: str = "paused by an operator") -> Flag:
        """Hold the flag at its percentage (its cohort keeps the variant)."""
        flag = self.flags.get(name)
        return self.flags.transition(name, state="paused", percent=flag.percent,
                                     action="pause", actor=self._actor, reason=reason,
                                     from_states={"rolling", "paused"})

    def rollback(self, name: str, *, reason: str,
                 details: dict[str, Any] | None = None) -> Flag:
        """The flag at 0 % for everyone (idempotent: a rolled-back flag is returned as is)."""
        flag = self.flags.transition(name, state="rolled_back", percent=0, action="rollback",
                                     actor=self._actor, reason=reason, details=details)
        if details is not None:
            _log.error("rollout of %s rolled back: %s (%s)", name, reason,
                       {k: details.get(k) for k in ("percent", "failed_gate")})
        return flag

    def steps(self, name: str, *, reason: str = "rollout started",
              approve: Callable[[int], bool] | None = None) -> RolloutSteps:
        """The rollout loop's steps as this controller's own moves, in this process (the
        Prefect flow passes its tasks instead)."""
        steps = RolloutSteps(start=lambda: self.start(name, reason=reason).as_dict(),
                             judge=lambda: self.step(name).as_dict(),
                             pause=lambda why: self.pause(name, reason=why).as_dict(),
                             preview=lambda: self.judge(name).as_dict())
        if approve is not None:
            steps.approve = approve
        return steps

    def _stages(self, flag: Flag) -> tuple[int, ...]:
        return flag.stages or self.policy.stages

    def _next(self, flag: Flag) -> int:
        nxt = flag.next_stage()
        return 100 if nxt is None else nxt
