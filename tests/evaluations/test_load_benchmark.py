"""``rag bench load --quick --json``: the load benchmark runs end to end as a user runs it
(rag serve as a child, wrk, the fake LLM), fails no request, finds an audit row for every
query the service answered, writes its report and deletes its tenant. No speed is asserted:
the numbers belong to the benchmark's own runs, not to a test."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.serve_process import rag_command
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment

ISSUE_KEYS = {"cached_rps", "cached_p50_ms", "cached_p95_ms", "cached_p99_ms", "uncached_rps",
              "uncached_p95_ms", "errors", "audit_rows_expected", "audit_rows_written"}
RUN_KEYS = {"cpu", "workers", "connections", "duration_s", "wrk_version", "goals", "report"}


def _tenants(settings: Settings) -> int:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM rag.tenants").fetchone()
    return int(row[0]) if row else 0


def test_quick_run_answers_every_request_and_audits_each(
        settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    # The suite never skips for want of a tool: scripts/test.sh installs wrk.
    assert shutil.which("wrk") is not None, "wrk is missing: run scripts/system-packages.sh"
    reports = tmp_path / "reports"
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                          RAG_EMBEDDED_DATABASE=settings.embedded_database,
                          RAG_REPORTS_DIR=str(reports))  # never write into the repository
    tenants_before = _tenants(settings)

    done = subprocess.run([*rag_command(), "bench", "load", "--quick", "--json"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=800,
                          check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data.keys() >= ISSUE_KEYS | RUN_KEYS
    assert (data["mode"], data["workers"]) == ("quick", 2)
    assert data["errors"] == 0 and data["warmup_failures"] == 0
    assert data["cached_requests"] > 0 and data["uncached_requests"] > 0
    assert data["audit_rows_written"] == data["audit_rows_expected"]
    # expected: every request wrk completed and the warm-up's, at least
    assert data["audit_rows_expected"] >= (data["cached_requests"] + data["uncached_requests"]
                                           + data["warmup_requests"])
    assert data["wrk_version"].startswith("wrk")
    folder = Path(data["report"])
    assert folder.parent == reports / "load"
    assert (folder / "report.md").is_file()
    assert json.loads((folder / "results.json").read_text())["results"]["errors"] == 0
    assert _tenants(settings) == tenants_before


def test_rag_bench_mounts_the_command() -> None:
    from evaluations.cli.bench_commands import bench_app

    result = CliRunner().invoke(bench_app, ["load", "--help"])
    assert result.exit_code == 0
    assert "--quick" in result.output and "--connections" in result.output
