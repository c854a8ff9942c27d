"""``rag rollout create|list|start|status|advance|pause|rollback`` through the console
script, against a database of this module's own (flags are global): the ``--json`` last
lines, the moves in the flag's history, and typed one-line failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rag_core.codes import ErrorCode
from rag_core.config import Settings
from rag_core.ops import services
from rag_core.redis.embedded import EmbeddedRedis
from tests.cli.test_failures import assert_one_line_failure, run_rag, run_rag_json, servers_env


@pytest.fixture(scope="module")
def own_settings(create_database: Callable[[str], Settings]) -> Settings:
    settings = create_database("rolloutcli")
    services.upgrade_database(settings)
    return settings


@pytest.fixture()
def env(own_settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> dict[str, str]:
    return servers_env(own_settings, redis_server.url(), tmp_path)


def test_a_flag_from_creation_to_rollback(env: dict[str, str], tmp_path: Path) -> None:
    created = run_rag_json(["rollout", "create", "cli-hybrid", "--variant", "retrieval_mode=hybrid",
                     "--stages", "10,100", "--description", "hybrid for a cohort"], env,
                    tmp_path)
    assert (created["state"], created["percent"], created["stages"]) == ("off", 0, [10, 100])
    started = run_rag_json(["rollout", "start", "cli-hybrid"], env, tmp_path)
    assert (started["state"], started["percent"]) == ("rolling", 10)
    held = run_rag_json(["rollout", "advance", "cli-hybrid"], env, tmp_path)  # no traffic yet
    assert (held["action"], held["next_percent"]) == ("hold", 10)
    assert run_rag_json(["rollout", "pause", "cli-hybrid"], env, tmp_path)["state"] == "paused"
    status = run_rag_json(["rollout", "status", "cli-hybrid"], env, tmp_path)
    assert status["flag"]["state"] == "paused" and status["gates_now"]["action"] == "hold"
    assert [e["action"] for e in status["history"]] == ["pause", "gate_held", "start", "create"]
    forced = run_rag_json(["rollout", "advance", "cli-hybrid", "--force", "--reason", "on-call ok"],
                   env, tmp_path)
    assert (forced["action"], forced["next_percent"]) == ("complete", 100)
    back = run_rag_json(["rollout", "rollback", "cli-hybrid", "--reason", "drill"], env, tmp_path)
    assert (back["state"], back["percent"]) == ("rolled_back", 0)


def test_bad_input_and_wrong_states_are_typed_one_line_failures(env: dict[str, str],
                                                                tmp_path: Path) -> None:
    cases: list[tuple[list[str], ErrorCode, str]] = [
        (["rollout", "status", "no-such-flag"], ErrorCode.UNKNOWN_FLAG, "no-such-flag"),
        (["rollout", "create", "x2", "--variant", "prompt_version=v9"], ErrorCode.INVALID_FLAG,
         "v9"),
    ]
    for args, code, named in cases:
        line, _ = assert_one_line_failure(run_rag([*args, "--json"], env, tmp_path), code)
        assert named in line  # the offending value is named
    run_rag_json(["rollout", "create", "cli-state", "--variant", "prompt_version=batch-qa-v2"], env,
          tmp_path)
    run_rag_json(["rollout", "rollback", "cli-state"], env, tmp_path)
    line, _ = assert_one_line_failure(
        run_rag(["rollout", "advance", "cli-state", "--json"], env, tmp_path),
        ErrorCode.ROLLOUT_REFUSED)
    assert "rolled_back" in line
