"""``rag rollback`` (rag_core.ops.emergency_rollback) over the real test PostgreSQL and Redis.

Flags are global to a database and a downgrade changes a database's schema, so every flag
and every downgrade here lives in a private database of this module's own; cache keys live
under a prefix of each test's own, so a clear of "every tenant" touches no other test.
"""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rag_core.codes import ErrorCode
from rag_core.common.processes import pick_port
from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.connection import admin_connection, resolve_targets
from rag_core.db.feature_flags import FlagStore
from rag_core.errors import CacheUnavailableError, ConfigurationError, UnknownFlagError
from rag_core.ops import services
from rag_core.ops.doctor import run_doctor
from rag_core.ops.emergency_rollback import (
    RollbackPlan,
    RollbackReport,
    RollbackTargets,
    run_emergency_rollback,
)
from rag_core.ops.rollback_audit import RollbackAuditLog
from rag_core.query.answer_cache import AnswerCache
from rag_core.redis.client import fail_fast_redis
from rag_core.redis.embedded import EmbeddedRedis
from tests.cli.test_failures import RAG, assert_one_line_failure
from tests.conftest import cli_environment

REPORT_KEYS = {"ok", "changed", "run_id", "actor", "reason", "started_at", "finished_at",
               "steps", "failed_step", "error", "code", "message", "doctor", "audit_log"}
STEP_KEYS = {"step", "status", "detail", "counts", "items"}
ANSWER: dict[str, Any] = {"answer": "cached", "citations": [], "model": None, "sources": []}


# --- fixtures -------------------------------------------------------------------------------
def _migrated(create_database: Callable[[str], Settings], prefix: str) -> Settings:
    private = create_database(prefix)
    services.upgrade_database(private)
    return private


@pytest.fixture(scope="module")
def flag_settings(create_database: Callable[[str], Settings]) -> Settings:
    """A migrated database of this module's own, kept at the latest version."""
    return _migrated(create_database, "rbk")


@pytest.fixture(scope="module")
def flag_platform(flag_settings: Settings) -> Iterator[Platform]:
    with Platform(flag_settings, start_services=False) as platform:
        yield platform


@pytest.fixture()
def prefix(redis_client: redis.Redis, control_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    chosen = f"rbk{secrets.token_hex(4)}"
    yield chosen
    for client in (redis_client, control_client):
        for pattern in (f"{chosen}:*", f"{chosen}x:*", f"other{chosen}:*"):
            names = list(client.scan_iter(match=pattern))
            if names:
                client.unlink(*names)


@pytest.fixture(scope="module")
def control_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """The controls' database (rate limits, quotas, breaker) of the test Redis."""
    client = redis.Redis.from_url(redis_server.control_url())
    yield client
    client.close()


def _targets(settings: Settings, platform: Platform, cache: redis.Redis,
             prefix: str = "rbk-unused") -> RollbackTargets:
    return RollbackTargets(flags=platform.flags,
                           admin=lambda: admin_connection(settings),
                           migrations_dir=settings.migrations_dir, cache=cache,
                           key_prefix=prefix, doctor=lambda: run_doctor(settings))


def _new_flag(flags: FlagStore, *, state: str = "rolling", percent: int = 25,
              force_on: tuple[str, ...] = ()) -> str:
    name = f"rbk-{secrets.token_hex(4)}"
    flags.create(name, {"retrieval_mode": "hybrid"}, force_on=force_on, actor="test",
                 reason="test flag")
    flags.transition(name, state=state, percent=percent,  # type: ignore[arg-type]
                     action="start", actor="test", reason="test rollout")
    return name


def _statuses(report: RollbackReport) -> dict[str, str]:
    return {s.step: s.status for s in report.steps}


# --- flags ----------------------------------------------------------------------------------
def test_flags_are_rolled_back_with_events_and_a_second_run_changes_nothing(
        flag_settings: Settings, flag_platform: Platform, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    flags = flag_platform.flags
    vip = new_tenant_id()
    rolling = _new_flag(flags, percent=25, force_on=(vip,))
    complete = _new_flag(flags, state="complete", percent=100)
    assert flags.get(rolling).reaches(vip)
    audit = RollbackAuditLog(tmp_path / "audit" / "rollback.jsonl")
    plan = RollbackPlan(flags=(rolling, complete), reason="bad prompt", actor="ops test")
    targets = _targets(flag_settings, flag_platform, redis_client)

    first = run_emergency_rollback(plan, targets, audit)

    assert first.error is None and first.failed_step is None, first.as_dict()
    assert first.ok and first.changed and first.exit_code == 0
    assert _statuses(first) == {"flags": "changed"}
    step = first.steps[0]
    assert dict(step.counts) == {"flags": 2, "turned_off": 2, "already_off": 0}
    assert [(i["name"], i["state_before"], i["percent_before"], i["state"], i["percent"])
            for i in step.items] == [(rolling, "rolling", 25, "rolled_back", 0),
                                     (complete, "complete", 100, "rolled_back", 0)]
    for name in (rolling, complete):
        flag = flags.get(name)
        assert (flag.state, flag.percent) == ("rolled_back", 0)
        event = flags.history(name, limit=1)[0]
        assert (event.action, event.state, event.percent, event.actor, event.reason) == (
            "rollback", "rolled_back", 0, "ops test", "bad prompt")
        assert event.details["run_id"] == first.run_id
    assert not flags.get(rolling).reaches(vip)  # force_on included: nobody
    assert first.doctor is not None and first.doctor.ok and not first.doctor.accepted

    history = {name: flags.history(name) for name in (rolling, complete)}
    moved_at = {name: flags.get(name).updated_at for name in (rolling, complete)}
    audit.path.chmod(0o644)  # widened by someone: the next record puts it back to 0600
    second = run_emergency_rollback(plan, targets, audit)

    assert second.ok and not second.changed and second.exit_code == 0
    assert _statuses(second) == {"flags": "unchanged"}
    assert dict(second.steps[0].counts) == {"flags": 2, "turned_off": 0, "already_off": 2}
    assert {name: flags.history(name) for name in (rolling, complete)} == history
    assert {name: flags.get(name).updated_at for name in (rolling, complete)} == moved_at

    # the audit file: 0600, a started, a step and a finished record per run
    assert stat.S_IMODE(audit.path.stat().st_mode) == 0o600
    for report in (first, second):
        records = list(audit.records(report.run_id))
        assert [r["event"] for r in records] == ["started", "step", "finished"]
        assert records[0]["plan"]["flags"] == [rolling, complete]
        assert records[0]["actor"] == "ops test" and records[0]["reason"] == "bad prompt"
        assert records[1]["step"] == "flags" and records[1]["status"] == (
            "changed" if report is first else "unchanged")
        assert records[2]["ok"] is True and records[2]["changed"] is report.changed


def test_a_mistyped_flag_stops_the_run_before_anything_moves(
        flag_settings: Settings, flag_platform: Platform, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    flags = flag_platform.flags
    live = _new_flag(flags, percent=5)
    audit = RollbackAuditLog(tmp_path / "rollback.jsonl")
    plan = RollbackPlan(flags=(live, "rbk-no-such-flag"), clear_cache=True)

    report = run_emergency_rollback(plan, _targets(flag_settings, flag_platform,
                                                   redis_client), audit)

    assert not report.ok and report.failed_step == "flags"
    assert isinstance(report.error, UnknownFlagError)
    assert report.exit_code == int(ErrorCode.UNKNOWN_FLAG.exit_code) == 2
    assert _statuses(report) == {"flags": "failed"}  # the cache step never ran
    assert report.doctor is None
    assert (flags.get(live).state, flags.get(live).percent) == ("rolling", 5)
    payload = report.as_dict()
    assert (payload["code"], payload["error"]) == ("unknown_flag", "UnknownFlagError")
    assert "rbk-no-such-flag" in payload["message"]
    records = list(audit.records(report.run_id))
    assert [(r["event"], r.get("status"), r.get("code")) for r in records] == [
        ("started", None, None), ("step", "failed", "unknown_flag"),
        ("finished", None, "unknown_flag")]


def test_nothing_runs_when_the_audit_cannot_be_written(
        flag_settings: Settings, flag_platform: Platform, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    flags = flag_platform.flags
    live = _new_flag(flags, percent=5)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    link = tmp_path / "rollback.jsonl"
    link.symlink_to(elsewhere)  # a link in the log's place is refused, never followed

    with pytest.raises(ConfigurationError, match="rollback audit log"):
        run_emergency_rollback(RollbackPlan(flags=(live,)),
                               _targets(flag_settings, flag_platform, redis_client),
                               RollbackAuditLog(link))
    assert (flags.get(live).state, flags.get(live).percent) == ("rolling", 5)
    assert elsewhere.read_text() == ""


def test_a_failing_step_reports_what_was_done_before_it(
        flag_settings: Settings, flag_platform: Platform, tmp_path: Path) -> None:
    flags = flag_platform.flags
    live = _new_flag(flags, percent=50)
    nowhere = fail_fast_redis(f"redis://127.0.0.1:{pick_port(None)}/0")  # nothing listens
    plan = RollbackPlan(flags=(live,), clear_cache=True)

    report = run_emergency_rollback(plan, _targets(flag_settings, flag_platform, nowhere),
                                    RollbackAuditLog(tmp_path / "rollback.jsonl"))
    nowhere.close()

    assert _statuses(report) == {"flags": "changed", "answer_cache": "failed"}
    assert report.failed_step == "answer_cache"
    assert isinstance(report.error, CacheUnavailableError)
    assert report.exit_code == 3 and report.as_dict()["code"] == "cache_unavailable"
    assert flags.get(live).state == "rolled_back"


# --- the answer cache -----------------------------------------------------------------------
def _answers(client: redis.Redis, prefix: str, tenant: TenantId, count: int) -> list[str]:
    """Answers written by the product's own answer cache (so the key shape is its)."""
    cache = AnswerCache(client, epochs=lambda t: "e1", prefix=prefix)
    keys = [cache.key(tenant, f"question {i}", 1, model="m") for i in range(count)]
    for key in keys:
        cache.put(key, ANSWER)
    names = [key.redis_key() for key in keys]
    assert all(client.exists(name) for name in names)
    return names


def _existing(client: redis.Redis, names: list[str]) -> list[str]:
    return [name for name in names if client.exists(name)]


def test_cache_clear_removes_only_our_answer_keys_per_tenant_then_for_all(
        flag_settings: Settings, flag_platform: Platform, redis_client: redis.Redis,
        control_client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    one, two = new_tenant_id(), new_tenant_id()
    answers_one = _answers(redis_client, prefix, one, 3)
    answers_two = _answers(redis_client, prefix, two, 2)
    survivors = [
        f"{prefix}:{one}:qemb:e1:model-v1:abc",        # our query-embedding cache
        f"{prefix}:{one}:qemb:e1:m:answer:zz",         # matches the glob, not our shape
        f"{prefix}:rl:{{{one}}}:req",                  # a control's shape, in the caches' db
        f"{prefix}x:{one}:answer:e1:v1:cfg:q",         # another product: a longer prefix
        f"other{prefix}:{one}:answer:e1:v1:cfg:q",     # another product's prefix
    ]
    for name in survivors:
        redis_client.set(name, "keep")
    controls = [f"{prefix}:quota:{{{one}}}:day", f"{prefix}:{one}:answer:e1:v1:cfg:q"]
    for name in controls:  # the controls' database is never touched, whatever the names
        control_client.set(name, "keep")
    audit = RollbackAuditLog(tmp_path / "rollback.jsonl")
    targets = _targets(flag_settings, flag_platform, redis_client, prefix)

    only_one = run_emergency_rollback(RollbackPlan(clear_cache=True, tenant=one), targets,
                                      audit)
    assert only_one.ok and _statuses(only_one) == {"answer_cache": "changed"}
    assert only_one.steps[0].counts["deleted"] == 3
    assert _existing(redis_client, answers_one) == []
    assert _existing(redis_client, answers_two) == answers_two
    again = run_emergency_rollback(RollbackPlan(clear_cache=True, tenant=one), targets, audit)
    assert _statuses(again) == {"answer_cache": "unchanged"} and not again.changed

    every = run_emergency_rollback(RollbackPlan(clear_cache=True), targets, audit)
    assert every.ok and _statuses(every) == {"answer_cache": "changed"}
    assert dict(every.steps[0].counts) == {"deleted": 2, "ignored": 1}
    assert _existing(redis_client, answers_two) == []
    assert _existing(redis_client, survivors) == survivors
    assert _existing(control_client, controls) == controls
    twice = run_emergency_rollback(RollbackPlan(clear_cache=True), targets, audit)
    assert _statuses(twice) == {"answer_cache": "unchanged"}
    assert dict(twice.steps[0].counts) == {"deleted": 0, "ignored": 1}


# --- migrations and the doctor --------------------------------------------------------------
def test_downgrade_after_the_flags_with_the_doctor_verdict(
        create_database: Callable[[str], Settings], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    private = _migrated(create_database, "rbkmig")
    audit = RollbackAuditLog(tmp_path / "rollback.jsonl")
    with Platform(private, start_services=False) as platform:
        flag = _new_flag(platform.flags, percent=25)
        targets = _targets(private, platform, redis_client)
        plan = RollbackPlan(flags=(flag,), to_migration=11)

        first = run_emergency_rollback(plan, targets, audit)
        assert first.error is None, first.as_dict()
        assert _statuses(first) == {"flags": "changed", "migrations": "changed"}
        migration = first.steps[1]
        # every migration above 0011 goes, newest first (0012 added the rollout columns)
        latest = max(m.version for m in migrations.discover(private.migrations_dir))
        above = list(range(latest, 11, -1))
        assert dict(migration.counts) == {"from_version": latest, "to_version": 11,
                                          "rolled_back": len(above)}
        assert [i["version"] for i in migration.items] == above
        assert dict(migration.items[-1]) == {"version": 12, "name": "feature_flag_rollouts"}
        # the doctor finds them pending, which is what the rollback meant: accepted
        assert first.doctor is not None
        checks = {c.name: c for c in first.doctor.report.checks}
        assert checks["migrations"].status == "fail"
        assert f"pending migrations {sorted(above)}" in checks["migrations"].detail
        assert set(first.doctor.accepted) == {"migrations"}
        assert first.doctor.ok and first.ok and first.exit_code == 0

        second = run_emergency_rollback(plan, targets, audit)
        assert second.ok and not second.changed, second.as_dict()
        assert _statuses(second) == {"flags": "unchanged", "migrations": "unchanged"}
        assert "pre-0012" in second.steps[0].detail

        # at the 0001 shape a flag switched on again (by an older release) goes off again
        with admin_connection(private) as conn:
            conn.execute("UPDATE rag.feature_flags SET enabled = true, rollout_percent = 30 "
                         "WHERE flag_key = %s", [flag])
        third = run_emergency_rollback(plan, targets, audit)
        assert _statuses(third) == {"flags": "changed", "migrations": "unchanged"}
        with admin_connection(private) as conn:
            row = conn.execute("SELECT enabled, rollout_percent FROM rag.feature_flags "
                               "WHERE flag_key = %s", [flag]).fetchone()
            reason = conn.execute("SELECT reason FROM rag.feature_flag_events WHERE "
                                  "flag_key = %s ORDER BY event_id DESC LIMIT 1",
                                  [flag]).fetchone()
        assert row == (False, 0)
        assert reason is not None and third.run_id in reason[0]
        fourth = run_emergency_rollback(plan, targets, audit)
        assert _statuses(fourth) == {"flags": "unchanged", "migrations": "unchanged"}

        # down to 0: no flags are left to reach anyone, and the doctor fails what it must
        to_zero = run_emergency_rollback(RollbackPlan(flags=(flag,), to_migration=0),
                                         targets, audit)
        assert to_zero.error is None, to_zero.as_dict()
        assert _statuses(to_zero) == {"flags": "unchanged", "migrations": "changed"}
        assert to_zero.steps[1].counts["rolled_back"] == 11
        assert to_zero.doctor is not None and not to_zero.doctor.ok
        failing = {c.name for c in to_zero.doctor.report.checks if c.status == "fail"}
        assert "row-level security" in failing
        assert not to_zero.ok and to_zero.exit_code == 1
        assert to_zero.as_dict()["doctor"]["ok"] is False
        assert set(to_zero.doctor.accepted) == {"migrations"}  # at 0, as asked
        # asked for 11 but the schema is below it: its pending migrations are a finding
        below = run_emergency_rollback(RollbackPlan(to_migration=11), targets, audit)
        assert _statuses(below) == {"migrations": "unchanged"}
        assert below.steps[0].counts["from_version"] == 0
        assert below.doctor is not None and not below.doctor.accepted
    # the audit file kept every run, though the schema it was about is gone
    runs = {r["run_id"] for r in audit.records() if r["event"] == "finished"}
    assert runs == {first.run_id, second.run_id, third.run_id, fourth.run_id,
                    to_zero.run_id, below.run_id}


# --- the command line -----------------------------------------------------------------------
@pytest.fixture()
def cli_env(flag_settings: Settings, redis_server: EmbeddedRedis, prefix: str,
            tmp_path: Path) -> dict[str, str]:
    """The private database and the test Redis as URLs, this test's key prefix, an empty
    state folder (where the audit file goes)."""
    targets = resolve_targets(flag_settings)
    state = tmp_path / "state"
    state.mkdir()
    return cli_environment(DATABASE_URL=targets.admin_url,
                           RAG_APP_DATABASE_URL=targets.app_url, REDIS_URL=redis_server.url(),
                           RAG_STATE_DIR=str(state), RAG_REDIS_KEY_PREFIX=prefix)


def _rag(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # stdin is not a terminal, as in CI (never the terminal pytest may have been run from)
    return subprocess.run([*RAG, "rollback", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=180, check=False, stdin=subprocess.DEVNULL)


def _last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, output
    payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


def test_cli_json_report_then_nothing_changes(flag_platform: Platform,
                                              redis_client: redis.Redis,
                                              cli_env: dict[str, str], prefix: str,
                                              tmp_path: Path) -> None:
    flag = _new_flag(flag_platform.flags, percent=5)
    tenant = new_tenant_id()
    answers = _answers(redis_client, prefix, tenant, 2)
    args = ["--flag", flag, "--clear-cache", "--tenant", tenant, "--reason", "ci drill",
            "--yes", "--json"]

    done = _rag(args, cli_env, tmp_path)
    first = _last_json(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(first) == REPORT_KEYS
    assert (first["ok"], first["changed"], first["failed_step"], first["code"]) == (
        True, True, None, None)
    assert [set(s) for s in first["steps"]] == [STEP_KEYS, STEP_KEYS]
    assert [(s["step"], s["status"]) for s in first["steps"]] == [
        ("flags", "changed"), ("answer_cache", "changed")]
    assert first["steps"][1]["counts"] == {"deleted": 2, "ignored": 0}
    assert first["reason"] == "ci drill" and first["actor"].startswith("rag rollback (")
    assert set(first["doctor"]) == {"ok", "checks", "accepted"} and first["doctor"]["ok"]
    assert flag_platform.flags.get(flag).state == "rolled_back"
    assert _existing(redis_client, answers) == []
    audit = Path(first["audit_log"])
    assert audit.is_relative_to(Path(cli_env["RAG_STATE_DIR"]))
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    assert [r["event"] for r in RollbackAuditLog(audit).records(first["run_id"])] == [
        "started", "step", "step", "finished"]

    again = _rag(args, cli_env, tmp_path)
    second = _last_json(again)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (second["ok"], second["changed"]) == (True, False)
    assert [s["status"] for s in second["steps"]] == ["unchanged", "unchanged"]


def test_cli_refuses_without_yes_when_stdin_is_not_a_terminal(
        flag_platform: Platform, cli_env: dict[str, str], tmp_path: Path) -> None:
    flag = _new_flag(flag_platform.flags, percent=5)
    refused = _rag(["--flag", flag, "--json"], cli_env, tmp_path)
    line, payload = assert_one_line_failure(refused, ErrorCode.CONFIRMATION_REQUIRED)
    assert "--yes" in line and payload is not None
    assert refused.returncode == 4
    assert (flag_platform.flags.get(flag).state, flag_platform.flags.get(flag).percent) == (
        "rolling", 5)
    assert not (Path(cli_env["RAG_STATE_DIR"]) / "audit").exists()  # nothing ran


def test_cli_failed_step_is_one_line_and_the_report(flag_platform: Platform,
                                                    cli_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    live = _new_flag(flag_platform.flags, percent=5)
    failed = _rag(["--flag", live, "--flag", "rbk-typo", "--yes", "--json"], cli_env, tmp_path)
    _, payload = assert_one_line_failure(failed, ErrorCode.UNKNOWN_FLAG)
    assert payload is not None and set(payload) == REPORT_KEYS
    assert payload["failed_step"] == "flags" and payload["steps"][0]["status"] == "failed"
    assert flag_platform.flags.get(live).state == "rolling"


def test_cli_refuses_a_tenant_without_clear_cache(cli_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    result = _rag(["--flag", "rbk-any", "--tenant", new_tenant_id(), "--yes", "--json"],
                  cli_env, tmp_path)
    assert_one_line_failure(result, ErrorCode.CONFIGURATION_INVALID)
