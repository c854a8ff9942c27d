"""``rag rollout create|list|start|status|advance|pause|rollback``: feature flags and their
canary rollouts from the command line.

The same controller as the Prefect flow ``rollout`` (:mod:`rag_core.ops.rollout`): a
``start --watch`` runs the flow's loop in this process (soak, judge, advance or roll
back), a plain ``start`` only puts the flag at its first stage for a deployment run or a
person to carry on. Every command uses the admin connection (flags are changed by the
owner only) and is refused in a ``RAG_RUNTIME_ONLY`` process. ``rag rollout demo``
(two rollouts against a fake LLM) comes from the ``evaluations`` plugin.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.config.rollout import RolloutPolicy
from rag_core.errors import InvalidFlagError
from rag_core.ops.rollout.controller import Decision, Rollouts
from rag_core.ops.rollout.runner import run_rollout

__all__ = ["register", "rollout_app"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
FlagArg = Annotated[str, typer.Argument(help="the flag's name")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (kept in the flag's history)")]

rollout_app = typer.Typer(help="Feature flags and their canary rollouts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")


def _actor() -> str:
    try:
        return f"rag rollout ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "rag rollout"


def _rollouts(platform: Platform, **overrides: Any) -> Rollouts:
    policy = platform.settings.rollout.model_copy(
        update={k: v for k, v in overrides.items() if v is not None})
    return platform.rollouts(policy, actor=_actor())


def _variant(pairs: list[str]) -> dict[str, str]:
    variant: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise InvalidFlagError("variant", pair, "SETTING=VALUE, e.g. retrieval_mode=hybrid")
        variant[key.strip()] = value.strip()
    return variant


def _stages(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidFlagError("stages", text, "comma-separated percentages") from None


def _show_decision(decision: Decision, as_json: bool) -> None:
    if as_json:
        emit_json(decision.as_dict())
        return
    for gate in decision.gates:
        console.print(f"  {gate.outcome:4}  {gate.gate}: canary {gate.canary} control "
                      f"{gate.control} threshold {gate.threshold}", highlight=False)
    what = decision.would or decision.action
    console.print(f"{decision.flag} at {decision.percent} %: {what} -> "
                  f"{decision.next_percent} %", highlight=False)


@rollout_app.command("create")
@fail_cleanly
def create(name: FlagArg,
           variant: Annotated[list[str], typer.Option(
               "--variant", help="SETTING=VALUE the flag switches (retrieval_mode, "
                                 "prompt_version, embedding_model_key); repeatable")],
           stages: Annotated[str | None, typer.Option(help="e.g. 5,25,50,100")] = None,
           description: Annotated[str, typer.Option()] = "",
           force_on: Annotated[list[str] | None, typer.Option("--force-on")] = None,
           force_off: Annotated[list[str] | None, typer.Option("--force-off")] = None,
           as_json: JsonFlag = False) -> None:
    """Create a flag (off) that switches VARIANT for its cohort."""
    with Platform(get_settings()) as platform:
        flag = platform.flags.create(
            name, _variant(variant), description=description,
            stages=_stages(stages) or platform.settings.rollout.stages,
            force_on=force_on or (), force_off=force_off or (), actor=_actor())
    if as_json:
        emit_json(flag.as_dict())
    else:
        console.print(f"flag {flag.name} ({flag.state}): {dict(flag.variant)}, stages "
                      f"{list(flag.stages)}", highlight=False)


@rollout_app.command("list")
@fail_cleanly
def list_flags(as_json: JsonFlag = False) -> None:
    """Every flag with its state and percentage."""
    with Platform(get_settings()) as platform:
        flags = platform.flags.all()
    if as_json:
        emit_json({"flags": [f.as_dict() for f in flags]})
        return
    for flag in flags:
        console.print(f"{flag.name}  {flag.state}  {flag.percent} %  {dict(flag.variant)}",
                      highlight=False, markup=False)


@rollout_app.command("start")
@fail_cleanly
def start(name: FlagArg,
          watch: Annotated[bool, typer.Option(help="run the stages here until the rollout "
                                                   "completes, pauses or is rolled back")
                           ] = False,
          soak_s: Annotated[float | None, typer.Option("--soak-s")] = None,
          min_requests: Annotated[int | None, typer.Option("--min-requests")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="judge the current stage, "
                                                "move nothing")] = False,
          reason: ReasonOpt = "rollout started", as_json: JsonFlag = False) -> None:
    """Put NAME at its first stage (a paused rollout resumes); --watch runs its stages."""
    with Platform(get_settings()) as platform:
        rollouts = _rollouts(platform, soak_s=soak_s, min_requests=min_requests)
        if dry_run:
            _show_decision(rollouts.step(name, dry_run=True), as_json)
            return
        if not watch:
            flag = rollouts.start(name, reason=reason)
            if as_json:
                emit_json(flag.as_dict())
            else:
                console.print(f"{flag.name} is {flag.state} at {flag.percent} %",
                              highlight=False)
            return
        summary = _watch(rollouts, name, rollouts.policy, reason)
    if as_json:
        emit_json(summary)
    else:
        console.print(f"{name}: {summary['outcome']} at {summary['final_percentage']} % "
                      f"(stages passed: {summary['stages_passed']})", highlight=False)


def _watch(rollouts: Rollouts, name: str, policy: RolloutPolicy, reason: str) -> dict[str, Any]:
    steps = rollouts.steps(name, reason=reason, approve=lambda percent: typer.confirm(
        f"take {name} to {percent} %?", default=False))
    return run_rollout(name, policy, steps)


@rollout_app.command("status")
@fail_cleanly
def status(name: FlagArg,
           events: Annotated[int, typer.Option(help="history lines to show")] = 10,
           as_json: JsonFlag = False) -> None:
    """NAME's state, its latest history and (while it rolls) what its gates say now."""
    with Platform(get_settings()) as platform:
        flag = platform.flags.get(name)
        history = platform.flags.history(name, limit=events)
        judged = _rollouts(platform).judge(name).as_dict() if flag.comparing else None
    if as_json:
        emit_json({"flag": flag.as_dict(), "history": [e.as_dict() for e in history],
                   "gates_now": judged})
        return
    console.print(f"{flag.name}: {flag.state} at {flag.percent} % of stages "
                  f"{list(flag.stages)}; variant {dict(flag.variant)}", highlight=False)
    for event in history:
        console.print(f"  {event.occurred_at:%Y-%m-%d %H:%M:%S}  {event.action:15} "
                      f"{event.percent:3} %  {event.actor}: {event.reason}", highlight=False,
                      markup=False)
    if judged is not None:
        console.print(f"gates now: would {judged['action']}"
                      + (f" (gate {judged['failed_gate']})" if judged["failed_gate"] else ""),
                      highlight=False)


@rollout_app.command("advance")
@fail_cleanly
def advance(name: FlagArg,
            force: Annotated[bool, typer.Option(help="move on even if a gate holds or "
                                                     "fails (recorded as forced)")] = False,
            reason: ReasonOpt = "", as_json: JsonFlag = False) -> None:
    """Judge NAME's stage now and act on it (advance, hold or roll back)."""
    with Platform(get_settings()) as platform:
        decision = _rollouts(platform).advance(name, force=force, reason=reason)
    _show_decision(decision, as_json)


@rollout_app.command("pause")
@fail_cleanly
def pause(name: FlagArg, reason: ReasonOpt = "paused by an operator",
          as_json: JsonFlag = False) -> None:
    """Hold NAME at its percentage (its cohort keeps the variant)."""
    with Platform(get_settings()) as platform:
        flag = _rollouts(platform).pause(name, reason=reason)
    if as_json:
        emit_json(flag.as_dict())
    else:
        console.print(f"{flag.name} paused at {flag.percent} %", highlight=False)


@rollout_app.command("rollback")
@fail_cleanly
def rollback(name: FlagArg, reason: ReasonOpt = "rolled back by an operator",
             as_json: JsonFlag = False) -> None:
    """NAME at 0 % for everyone at once (force-on tenants too)."""
    with Platform(get_settings()) as platform:
        flag = _rollouts(platform).rollback(name, reason=reason)
    if as_json:
        emit_json(flag.as_dict())
    else:
        console.print(f"{flag.name} rolled back (0 %)", highlight=False)
