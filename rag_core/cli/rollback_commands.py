"""``rag rollback``: the emergency procedure (:mod:`rag_core.ops.emergency_rollback`) from
the command line.

It changes what every tenant gets, so it asks first: without ``--yes`` it shows the plan
and waits for a yes on the terminal, and where nobody can answer (standard input is not a
terminal: CI, a pipe, a cron job) it refuses (``confirmation_required``, exit 4) before
connecting to anything. The exit code is the failed step's (its error's category), else 1
when ``rag doctor`` still finds a problem afterwards, else 0. ``--json`` prints the whole
report as the last line, on failure too (it then also has ``error``, ``code`` and
``message``, as every command's failure object does).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from rag_core.cli._output import console, emit_json, fail_cleanly, report_failure
from rag_core.common.tenancy import parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import Settings, get_settings
from rag_core.errors import ConfirmationRequiredError
from rag_core.ops.doctor import run_doctor
from rag_core.ops.emergency_rollback import (
    RollbackPlan,
    RollbackReport,
    RollbackTargets,
    default_actor,
    run_emergency_rollback,
)
from rag_core.ops.rollback_audit import RollbackAuditLog, default_audit_path
from rag_core.redis import urls as redis_urls
from rag_core.redis.client import fail_fast_redis

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]

# An emergency command waits longer than the query path's 0.25 s before calling Redis down.
_REDIS_TIMEOUT_S = 5.0


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)


@fail_cleanly
def rollback(
    flags: Annotated[list[str] | None, typer.Option(
        "--flag", help="a feature flag to turn off: rolled back to 0 %, reaching nobody "
                       "(repeatable)")] = None,
    to_migration: Annotated[int | None, typer.Option(
        "--to-migration", min=0, help="roll back every migration above this version "
                                      "(after the flags are off)")] = None,
    clear_cache: Annotated[bool, typer.Option(
        "--clear-cache", help="delete this product's cached answers (never FLUSHDB)")] = False,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", help="with --clear-cache: only this tenant's cached answers")] = None,
    reason: Annotated[str, typer.Option(help="why, for the audit")] = "emergency rollback",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (required where "
                                                          "nobody can answer)")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Emergency rollback: flags off, optional migration downgrade, cached answers cleared,
    then rag doctor; every step audited, a second run changes nothing."""
    plan = RollbackPlan(flags=tuple(flags or ()), to_migration=to_migration,
                        clear_cache=clear_cache,
                        tenant=parse_tenant_id(tenant) if tenant is not None else None,
                        reason=reason, actor=default_actor())
    settings = get_settings()
    _confirm(plan, settings, yes=yes)
    with Platform(settings) as platform:
        platform.ensure_services()
        cache = fail_fast_redis(redis_urls.cache_url(settings), socket_timeout_s=_REDIS_TIMEOUT_S,
                                connect_timeout_s=_REDIS_TIMEOUT_S)
        try:
            targets = RollbackTargets(flags=platform.flags, admin=platform.admin_connection,
                                      migrations_dir=settings.migrations_dir, cache=cache,
                                      key_prefix=settings.redis_key_prefix,
                                      doctor=lambda: run_doctor(settings))
            report = run_emergency_rollback(plan, targets,
                                            RollbackAuditLog(default_audit_path(settings)))
        finally:
            cache.close()
    _show(report)
    if report.error is not None:
        report_failure(report.error, as_json=False)  # the one stderr line of a failure
    if as_json:
        emit_json(report.as_dict())
    if report.exit_code:
        raise typer.Exit(code=report.exit_code)


def _describe(plan: RollbackPlan, settings: Settings) -> list[str]:
    lines = []
    if plan.flags:
        lines.append(f"turn off feature flags {', '.join(plan.flags)} (0 %, nobody)")
    if plan.to_migration is not None:
        lines.append(f"roll back every migration above {plan.to_migration:04d}")
    if plan.clear_cache:
        who = f"tenant {plan.tenant}" if plan.tenant else "every tenant"
        lines.append(f"delete the cached answers of {who} (key prefix "
                     f"{settings.redis_key_prefix!r})")
    return lines


def _confirm(plan: RollbackPlan, settings: Settings, *, yes: bool) -> None:
    if yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise ConfirmationRequiredError("rag rollback", "standard input is not a terminal, "
                                        "so nobody can confirm it: give --yes")
    console.print("rag rollback will:", highlight=False)
    for line in _describe(plan, settings):
        console.print(f"  - {line}", highlight=False, markup=False)
    if not typer.confirm("Go ahead?", default=False):
        raise ConfirmationRequiredError("rag rollback", "not confirmed at the prompt")


def _show(report: RollbackReport) -> None:
    table = Table(title=f"rag rollback {report.run_id}")
    for column in ("step", "status", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"changed": "yellow", "unchanged": "green", "failed": "bold red"}
    for step in report.steps:
        table.add_row(step.step, f"[{colours[step.status]}]{step.status}[/]", step.detail)
    console.print(table)
    if report.doctor is not None:
        failing = [c for c in report.doctor.report.checks if c.status == "fail"]
        for check in failing:
            why = report.doctor.accepted.get(check.name)
            note = f" (expected: {why})" if why else ""
            console.print(f"doctor: {check.name} fails: {check.detail}{note}", highlight=False,
                          markup=False)
        console.print(f"doctor: {'ok' if report.doctor.ok else 'PROBLEMS FOUND'}",
                      highlight=False)
    console.print(f"audit: {report.audit_log} (run {report.run_id})", highlight=False,
                  markup=False)
