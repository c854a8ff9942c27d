"""``rag rollback``: the seed's emergency rollback script, done safely and idempotently.

The seed's script switched features off with a POST, ran a rollback SQL file, ran
``FLUSHDB`` on Redis, undid the deployment and ran a health check. Here, in this order:

1. ``flags``: the named flags to ``rolled_back`` at 0 % (before any downgrade: below 0012
   the flag columns the move needs are gone);
2. ``migrations``: optionally, every migration above ``--to-migration N`` rolled back;
3. ``answer_cache``: optionally, this product's cached answers deleted (one tenant or all
   of ours) by SCAN + UNLINK of their exact keys, never ``FLUSHDB`` (the caches' Redis may
   be shared, and the controls' database, rate limits and quotas, is never touched);
4. ``rag doctor``'s verdict, with one finding accepted: the migrations the rollback meant
   to leave unapplied (``pending migrations [...]`` exactly above the target). Anything
   else the doctor fails makes the report not ``ok`` (the CLI's exit code 1).

The deployment itself (the seed's ``kubectl rollout undo``) is not the library's to undo.

It stops at the first step that fails, with that step's typed error (its code gives the
exit code) and the results of the steps before it. Every step is idempotent (a second run
reports ``unchanged`` for each, see :mod:`rag_core.ops.rollback_steps`). A bug (an
exception that is not a :class:`RagCoreError`) propagates: its run has a ``started``
record and no ``finished`` one.

Audit: a ``started`` record (the plan, who, why) before anything changes, one record per
step with what it changed, and a ``finished`` record, in an append-only 0600 JSON-lines
file under the state folder (:mod:`rag_core.ops.rollback_audit`: a file because the
downgrade may remove the tables a database record would go in, and the failing step may
be the database); the flag moves are also events in ``rag.feature_flag_events`` carrying
the run's id. If the ``started`` record cannot be written nothing runs.
"""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import redis

from rag_core.common.tenancy import TenantId
from rag_core.db import migrations
from rag_core.db.feature_flags import FlagStore
from rag_core.errors import ConfigurationError, DatabaseError, RagCoreError
from rag_core.ops.doctor import DoctorReport
from rag_core.ops.rollback_audit import RollbackAuditLog
from rag_core.ops.rollback_steps import (
    AdminConnector,
    StepResult,
    clear_answer_cache,
    downgrade_schema,
    turn_flags_off,
)

T = TypeVar("T")

__all__ = ["DoctorVerdict", "RollbackPlan", "RollbackReport", "RollbackTargets",
           "default_actor", "run_emergency_rollback"]


def default_actor() -> str:
    """Who runs it, for the audit: ``rag rollback (user@host)``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"rag rollback ({user}@{socket.gethostname()})"


@dataclass(frozen=True)
class RollbackPlan:
    """What to roll back (at least one step) and why."""

    flags: tuple[str, ...] = ()
    to_migration: int | None = None
    clear_cache: bool = False
    tenant: TenantId | None = None
    reason: str = "emergency rollback"
    actor: str = "rag rollback"

    def __post_init__(self) -> None:
        if not (self.flags or self.to_migration is not None or self.clear_cache):
            raise ConfigurationError("--flag / --to-migration / --clear-cache", "none given",
                                     "rag rollback needs at least one step to run")
        if self.tenant is not None and not self.clear_cache:
            raise ConfigurationError("--tenant", self.tenant, "names the tenant whose cached "
                                     "answers --clear-cache deletes: give --clear-cache too")
        if self.to_migration is not None and self.to_migration < 0:
            raise ConfigurationError("--to-migration", self.to_migration, "a version >= 0")
        if not self.reason.strip():
            raise ConfigurationError("--reason", self.reason, "say why (it goes in the audit)")

    @property
    def steps(self) -> list[str]:
        return (["flags"] if self.flags else []) \
            + (["migrations"] if self.to_migration is not None else []) \
            + (["answer_cache"] if self.clear_cache else [])

    def as_dict(self) -> dict[str, Any]:
        return {"flags": list(self.flags), "to_migration": self.to_migration,
                "clear_cache": self.clear_cache, "tenant": self.tenant, "steps": self.steps}


@dataclass(frozen=True)
class RollbackTargets:
    """What the steps act on (the CLI builds it from the composition root): the flag store,
    the admin connection, the migrations folder, the caches' Redis and its key prefix, and
    the doctor to run at the end."""

    flags: FlagStore
    admin: AdminConnector
    migrations_dir: Path
    cache: redis.Redis
    key_prefix: str
    doctor: Callable[[], DoctorReport]


@dataclass(frozen=True)
class DoctorVerdict:
    """``rag doctor``'s report after the rollback, with the findings the rollback caused on
    purpose (``accepted``: check name → why)."""

    report: DoctorReport
    accepted: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" or c.name in self.accepted for c in self.report.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": self.report.as_dict()["checks"],
                "accepted": [{"name": n, "why": w} for n, w in self.accepted.items()]}


@dataclass(frozen=True)
class RollbackReport:
    """What a run did: each step's result in order, where it stopped and why, the doctor."""

    run_id: str
    plan: RollbackPlan
    started_at: datetime
    finished_at: datetime
    steps: tuple[StepResult, ...]
    audit_log: Path
    failed_step: str | None = None
    error: RagCoreError | None = None
    doctor: DoctorVerdict | None = None

    @property
    def ok(self) -> bool:
        """Every step done and the doctor satisfied."""
        return self.error is None and self.doctor is not None and self.doctor.ok

    @property
    def changed(self) -> bool:
        return any(s.status == "changed" for s in self.steps)

    @property
    def exit_code(self) -> int:
        """0, 1 (the doctor found problems) or the failed step's error's exit code."""
        if self.error is not None:
            return int(self.error.code.exit_code)
        return 0 if self.ok else 1

    def as_dict(self) -> dict[str, Any]:
        error = self.error
        return {"ok": self.ok, "changed": self.changed, "run_id": self.run_id,
                "actor": self.plan.actor, "reason": self.plan.reason,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(),
                "steps": [s.as_dict() for s in self.steps], "failed_step": self.failed_step,
                "error": None if error is None else type(error).__name__,
                "code": None if error is None else error.code.value,
                "message": None if error is None else " ".join(str(error).split()),
                "doctor": None if self.doctor is None else self.doctor.as_dict(),
                "audit_log": str(self.audit_log)}


def run_emergency_rollback(plan: RollbackPlan, targets: RollbackTargets,
                           audit: RollbackAuditLog) -> RollbackReport:
    """Run ``plan``'s steps in order, audited; stop at the first that fails. Raises only
    when the ``started`` record cannot be written (then nothing ran)."""
    run_id = uuid.uuid4().hex
    started = datetime.now(UTC)
    who = {"run_id": run_id, "actor": plan.actor, "reason": plan.reason}
    audit.append({**who, "event": "started", "plan": plan.as_dict()})
    done, failed, error = _run_steps(plan, targets, audit, who)
    verdict = None
    if error is None:
        try:
            verdict = _guarded(lambda: _verdict(targets, plan))
        except RagCoreError as exc:
            failed, error = "doctor", exc
    report = RollbackReport(run_id, plan, started, datetime.now(UTC), tuple(done),
                            audit.path, failed, error, verdict)
    try:
        audit.append({**who, "event": "finished", "ok": report.ok, "changed": report.changed,
                      "failed_step": failed, "code": None if error is None else error.code.value,
                      "doctor": None if verdict is None else verdict.as_dict()})
    except ConfigurationError as exc:
        if error is None:
            return replace(report, failed_step="audit", error=exc)
    return report


def _run_steps(plan: RollbackPlan, targets: RollbackTargets, audit: RollbackAuditLog,
               who: Mapping[str, str]) -> tuple[list[StepResult], str | None,
                                                RagCoreError | None]:
    """The steps' results, and the step that failed with its error (None, None: none)."""
    actions: dict[str, Callable[[], StepResult]] = {
        "flags": lambda: turn_flags_off(targets.flags, targets.admin, plan.flags,
                                        actor=plan.actor, reason=plan.reason,
                                        run_id=who["run_id"]),
        "migrations": lambda: downgrade_schema(targets.admin, targets.migrations_dir,
                                               plan.to_migration or 0),
        "answer_cache": lambda: clear_answer_cache(targets.cache, targets.key_prefix,
                                                   plan.tenant),
    }
    done: list[StepResult] = []
    for step in plan.steps:
        failed: str | None = None
        error: RagCoreError | None = None
        try:
            result = _guarded(actions[step])
        except RagCoreError as exc:
            failed, error = step, exc
            result = StepResult(step, "failed", " ".join(str(exc).split()))
        done.append(result)
        try:
            audit.append({**who, "event": "step", **result.as_dict(),
                          "code": None if error is None else error.code.value})
        except ConfigurationError as exc:
            if error is None:  # the step ran; what follows must not run unaudited
                failed, error = "audit", exc
        if error is not None:
            return done, failed, error
    return done, None, None


def _guarded(action: Callable[[], T]) -> T:
    """A driver error that no layer below translated becomes a typed database error."""
    try:
        return action()
    except psycopg.Error as exc:
        raise DatabaseError(f"the database failed: {type(exc).__name__}: "
                            f"{str(exc).strip()}") from exc


def _verdict(targets: RollbackTargets, plan: RollbackPlan) -> DoctorVerdict:
    report = targets.doctor()
    accepted: dict[str, str] = {}
    migration_check = next((c for c in report.checks if c.name == "migrations"), None)
    target = plan.to_migration
    if target is not None and migration_check is not None and migration_check.status == "fail":
        with targets.admin() as conn:
            states = migrations.status(conn, targets.migrations_dir)
        # Accepted only when the schema is exactly where the rollback put it: every
        # migration up to the target applied (unedited), none above it.
        if all(s.applied == (s.version <= target) and s.checksum_ok is not False
               for s in states):
            above = [f"{s.version:04d}" for s in states if s.version > target]
            accepted["migrations"] = (f"rolled back to {target:04d} on purpose: "
                                      f"{', '.join(above)} left unapplied")
    return DoctorVerdict(report, accepted)
