"""Prefect flow ``analytics``: build the dbt marts, then check them with Great Expectations.

Two tasks: ``dbt-build`` (``dbt build`` as the analytics role, exactly as ``rag dbt build``
runs it; its output in the run's log) and ``checkpoint`` (the marts' expectation suites,
``rag_core.ops.analytics``; data docs rendered under ``<reports>/gx/``). The checkpoint runs
even when the build failed: a failed dbt test leaves the models it built in place, and the
checkpoint says which rows broke what. The run fails with ``data_quality_failed`` when either
failed; its message names every broken expectation, its column and a sample of the offending
rows, and the run keeps two artifacts: ``analytics-data-quality`` (Markdown: marts,
expectations, failures) and, when anything broke, ``analytics-failing-rows`` (a table:
expectation, column, failing rows, sample).

Deployed in ``prefect.yaml``: hourly, and after every completed run of the ``ingest`` and
``batch-query`` deployments (event triggers), one run at a time (dbt replaces the marts'
tables). No task retries: a failed test fails again on the same rows, and the next trigger
or the next hour runs it anew.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from flows._resources import platform
from rag_core.cli.dbt_commands import dbt_environment
from rag_core.config import resource_dir
from rag_core.ops.analytics import CheckReport, check_marts, raise_on_failure

_LOG_TAIL = 60  # lines of dbt's output kept in the run's log


class AnalyticsParameters(BaseModel):
    build: bool = Field(default=True, description="run `dbt build` before the checkpoint")
    full_refresh: bool = Field(default=False, description="rebuild the incremental models "
                                                          "from the whole audit log")
    data_docs: bool = Field(default=True, description="render the data docs (reports/gx)")


@task(name="dbt-build")
def dbt_build(full_refresh: bool = False) -> int:
    """``dbt build``; returns dbt's exit code (1: a model or test failed)."""
    args = ["build", *(["--full-refresh"] if full_refresh else [])]
    done = subprocess.run([str(Path(sys.executable).parent / "dbt"), *args],
                          cwd=resource_dir("dbt"), env=dbt_environment(platform().settings),
                          capture_output=True, text=True, check=False)
    logger = get_run_logger()
    lines = (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:]
    log = logger.info if done.returncode == 0 else logger.error
    log("dbt %s exited %d:\n%s", " ".join(args), done.returncode, "\n".join(lines))
    return done.returncode


@task(name="checkpoint")
def checkpoint(data_docs: bool = True, dbt_exit: int = 0) -> dict[str, Any]:
    """The marts' checkpoint; fails (``DataQualityError``) when a row broke an expectation
    or, with ``dbt_exit`` != 0, the build before it failed."""
    report: CheckReport = check_marts(platform().settings, docs=data_docs)
    create_markdown_artifact(report.markdown(), key="analytics-data-quality",
                             description="Great Expectations on the dbt marts")
    if report.failures:
        create_table_artifact(report.table(), key="analytics-failing-rows",
                              description="expectation, column, failing rows, sample")
    get_run_logger().info("%s", report.summary())
    raise_on_failure(report, dbt_exit=dbt_exit)
    return {**report.as_dict(), "dbt_exit": dbt_exit}


@flow(name="analytics", log_prints=True)
def analytics(params: AnalyticsParameters | None = None) -> dict[str, Any]:
    params = params or AnalyticsParameters()
    dbt_exit = dbt_build(params.full_refresh) if params.build else 0
    return checkpoint(params.data_docs, dbt_exit)
