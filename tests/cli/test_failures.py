"""How the real ``rag`` command fails: one readable line on stderr naming the problem, the
documented exit code, never a traceback; with ``--json`` a last stdout line with the typed
code. Each case runs the installed console script as a subprocess against the test servers
(or against a closed port, for the unreachable ones)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag_core.codes import ErrorCode, ExitCode
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.embeddings.base import Embedder
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import TEST_STATE_DIR, cli_environment

_SCRIPT = Path(sys.executable).with_name("rag")
RAG = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "rag_core.cli"]
VALID_UNKNOWN_TENANT = "tn_" + "0" * 32  # well-formed; never created


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_rag(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAG, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=180, check=False)


def servers_env(settings: Settings, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """A ``rag`` child's environment: ``settings``' database and ``redis_url`` given as URLs,
    with an empty state folder of the test's own."""
    targets = resolve_targets(settings)
    state = tmp_path / "state"
    state.mkdir()
    return cli_environment(DATABASE_URL=targets.admin_url, RAG_APP_DATABASE_URL=targets.app_url,
                           REDIS_URL=redis_url, RAG_STATE_DIR=str(state))


def run_rag_json(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """``rag ARGS --json`` that must succeed without a traceback; its last line's object."""
    result = run_rag([*args, "--json"], env, cwd)
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stdout + result.stderr, output
    payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


def assert_one_line_failure(result: subprocess.CompletedProcess[str], code: ErrorCode, *,
                            as_json: bool = True) -> tuple[str, dict[str, Any] | None]:
    """The contract of a typed failure; returns the stderr line and the JSON object."""
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, output
    assert result.returncode == int(code.exit_code), output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith(f"error [{code.value}]: "), output
    payload = None
    if as_json:
        payload = json.loads(result.stdout.strip().splitlines()[-1])
        assert payload["ok"] is False, output
        assert payload["code"] == code.value, output
        assert payload["message"] and payload["message"] in line, output
    else:
        assert "{" not in result.stdout, output
    return line, payload


@pytest.fixture()
def external_env(settings: Settings, redis_server: EmbeddedRedis,
                 tmp_path: Path) -> Callable[..., dict[str, str]]:
    """An environment for the test servers given as URLs (the way a user with their own
    PostgreSQL and Redis configures the product), with an empty state folder."""
    targets = resolve_targets(settings)
    state = tmp_path / "state"
    state.mkdir()

    def make(**overrides: str) -> dict[str, str]:
        values = {"DATABASE_URL": targets.admin_url, "RAG_APP_DATABASE_URL": targets.app_url,
                  "REDIS_URL": redis_server.url(), "RAG_STATE_DIR": str(state)}
        return cli_environment(**(values | overrides))

    return make


# --- (a) the embedding model is missing ---------------------------------------------------
def test_missing_embedding_model_is_named(external_env: Callable[..., dict[str, str]],
                                          make_tenant: Callable[[], TenantId],
                                          tmp_path: Path) -> None:
    tenant = make_tenant()
    env = external_env()
    result = run_rag(["query", "--tenant", tenant, "Does vitamin D help?", "--json"], env,
                     tmp_path)
    line, payload = assert_one_line_failure(result, ErrorCode.EMBEDDING_MODEL_UNAVAILABLE)
    assert result.returncode == ExitCode.UNAVAILABLE == 3
    assert payload is not None and payload["error"] == "EmbeddingModelUnavailableError"
    # Names what is missing (the export under the state folder) and how to make it.
    assert str(Path(env["RAG_STATE_DIR"]) / "models") in line
    assert "rag setup" in line


# --- (b) the database cannot be reached ---------------------------------------------------
@pytest.mark.parametrize("command", [
    ["db", "upgrade", "--json"],
    ["query", "--tenant", VALID_UNKNOWN_TENANT, "Does vitamin D help?", "--json"],
], ids=["db-upgrade", "query"])
def test_unreachable_database_is_named(external_env: Callable[..., dict[str, str]],
                                       embedder: Embedder, tmp_path: Path,
                                       command: list[str]) -> None:
    dead = f"postgresql://nobody:secret-pw@127.0.0.1:{closed_port()}/none"
    # The real model folder: the query must get as far as the database.
    env = external_env(DATABASE_URL=dead, RAG_APP_DATABASE_URL=dead,
                       RAG_STATE_DIR=str(TEST_STATE_DIR))
    result = run_rag(command, env, tmp_path)
    line, payload = assert_one_line_failure(result, ErrorCode.DATABASE_UNAVAILABLE)
    assert result.returncode == ExitCode.UNAVAILABLE == 3
    assert payload is not None and payload["error"] == "DatabaseUnavailableError"
    assert "is unavailable" in line
    assert "secret-pw" not in result.stdout + result.stderr  # the password is not echoed


# --- (c) Redis cannot be reached ----------------------------------------------------------
def test_doctor_reports_unreachable_redis(external_env: Callable[..., dict[str, str]],
                                          tmp_path: Path) -> None:
    env = external_env(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    result = run_rag(["doctor", "--json"], env, tmp_path)
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == ExitCode.CHECK_FAILED, output
    assert "Traceback" not in result.stdout + result.stderr, output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["redis"]["status"] == "fail", checks["redis"]
    assert "redis" in checks["redis"]["detail"].lower()
    # Only Redis is down: the database checks still pass.
    assert checks["postgres"]["status"] == "ok" and checks["migrations"]["status"] == "ok"


# --- (d) a malformed tenant id ------------------------------------------------------------
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_malformed_tenant_id_is_refused_before_any_connection(tmp_path: Path,
                                                              as_json: bool) -> None:
    dead = f"postgresql://nobody:x@127.0.0.1:{closed_port()}/none"
    env = cli_environment(DATABASE_URL=dead, RAG_APP_DATABASE_URL=dead,
                          REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",
                          RAG_STATE_DIR=str(tmp_path / "state"))
    args = ["query", "--tenant", "nope", "q"] + (["--json"] if as_json else [])
    result = run_rag(args, env, tmp_path)
    line, payload = assert_one_line_failure(result, ErrorCode.INVALID_TENANT_ID,
                                            as_json=as_json)
    assert result.returncode == ExitCode.INVALID_INPUT == 2
    assert "'nope'" in line
    if payload is not None:
        assert payload["error"] == "InvalidTenantIdError" and "'nope'" in payload["message"]


# --- (e) an unexpected error (a bug) ------------------------------------------------------
# A plugin command group (the documented ``rag.cli`` entry point) with commands that fail
# the way a bug does: one inside the product's failure wrapper, one outside it (caught by
# the console script's last line of defence).
_PLUGIN = '''
    import typer

    from rag_core.cli._output import fail_cleanly

    app = typer.Typer(no_args_is_help=True)


    @app.command("wrapped")
    @fail_cleanly
    def wrapped(as_json: bool = typer.Option(False, "--json")) -> None:
        raise RuntimeError("injected failure inside fail_cleanly")


    @app.command("bare")
    def bare(as_json: bool = typer.Option(False, "--json")) -> None:
        raise RuntimeError("injected failure outside fail_cleanly")
'''


@pytest.fixture()
def boom_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``rag`` has a ``boom`` plugin group and an empty state folder."""
    site = tmp_path / "plugin"
    (site / "rag_boom_plugin-0.dist-info").mkdir(parents=True)
    (site / "rag_boom_plugin.py").write_text(textwrap.dedent(_PLUGIN))
    (site / "rag_boom_plugin-0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rag-boom-plugin\nVersion: 0\n")
    (site / "rag_boom_plugin-0.dist-info" / "entry_points.txt").write_text(
        "[rag.cli]\nboom = rag_boom_plugin:app\n")
    return cli_environment(PYTHONPATH=str(site), RAG_STATE_DIR=str(tmp_path / "state"))


def _traceback_file(line: str) -> Path:
    match = re.search(r"full traceback in (\S+); --debug prints it\)$", line)
    assert match, line
    return Path(match.group(1))


@pytest.mark.parametrize("command", ["wrapped", "bare"])
def test_unexpected_error_writes_its_traceback_to_a_file(boom_env: dict[str, str],
                                                         tmp_path: Path, command: str) -> None:
    result = run_rag(["boom", command, "--json"], boom_env, tmp_path)
    line, payload = assert_one_line_failure(result, ErrorCode.INTERNAL_ERROR)
    assert result.returncode == ExitCode.INTERNAL == 70
    assert payload is not None and payload["error"] == "RuntimeError"
    where = "inside" if command == "wrapped" else "outside"
    assert f"unexpected RuntimeError: injected failure {where} fail_cleanly" in line
    written = _traceback_file(line)
    assert written.parent == Path(boom_env["RAG_STATE_DIR"]) / "logs"
    assert written.is_file() and written.stat().st_mode & 0o777 == 0o600
    text = written.read_text()
    assert text.startswith("Traceback") and "RuntimeError: injected failure" in text


def test_debug_prints_the_traceback_instead(boom_env: dict[str, str], tmp_path: Path) -> None:
    result = run_rag(["--debug", "boom", "wrapped", "--json"], boom_env, tmp_path)
    assert result.returncode == ExitCode.INTERNAL
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: injected failure inside fail_cleanly" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error [internal_error]: unexpected RuntimeError")
    assert last.endswith("(traceback above)")
    assert json.loads(result.stdout.strip().splitlines()[-1])["code"] == "internal_error"
    logs = Path(boom_env["RAG_STATE_DIR"]) / "logs"
    assert not logs.exists() or not list(logs.iterdir())  # printed, not written


def test_questions_path_that_is_a_directory_is_a_named_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "questions.jsonl"
    folder.mkdir()
    env = cli_environment(RAG_STATE_DIR=str(tmp_path / "state"))
    result = run_rag(["batch", str(folder), "--tenant", VALID_UNKNOWN_TENANT, "--json"], env,
                     tmp_path)
    assert result.returncode == ExitCode.INVALID_INPUT
    line, _ = assert_one_line_failure(result, ErrorCode.QUESTION_FILE_INVALID)
    assert str(folder) in line and "not a file" in line
