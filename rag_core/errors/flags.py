"""Errors of feature flags and their rollouts: a flag that does not exist, a definition that
cannot be used, a move its state does not allow, a rollout that a gate stopped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_core.codes import ErrorCode
from rag_core.errors.api import ResourceNotFoundError
from rag_core.errors.base import RagCoreError, shown
from rag_core.errors.inputs import InputError


class UnknownFlagError(ResourceNotFoundError):
    """No feature flag of that name."""

    code = ErrorCode.UNKNOWN_FLAG

    def __init__(self, name: object) -> None:
        super().__init__("feature flag", name)
        self.name = name


class InvalidFlagError(InputError):
    """A flag's definition (name, variant, stages, tenant lists) cannot be used."""

    code = ErrorCode.INVALID_FLAG

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"flag {field}={shown(value)!r} is invalid: expected {expected}")


class FlagStateError(RagCoreError):
    """A rollout move the flag's state does not allow (advancing a rolled-back flag, say)."""

    code = ErrorCode.ROLLOUT_REFUSED

    def __init__(self, name: str, state: str, action: str, allowed: Sequence[str]) -> None:
        self.name = name
        self.state = state
        self.action = action
        super().__init__(f"flag {name!r} is {state}: {action} needs it "
                         f"{' or '.join(allowed)}")


class RolloutRolledBackError(RagCoreError):
    """A rollout that a gate rolled back (the flow run fails with it, the flag is at 0 %)."""

    code = ErrorCode.ROLLOUT_ROLLED_BACK

    def __init__(self, name: str, gate: str, percent: int) -> None:
        self.name = name
        self.gate = gate
        self.percent = percent
        self.summary: dict[str, Any] = {}  # the rollout's decisions, when a run raised it
        super().__init__(f"flag {name!r} rolled back at {percent} %: gate {gate!r} failed")
