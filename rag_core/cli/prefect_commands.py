"""``rag prefect smoke``: prefect.yaml's deployments on a real Prefect server with workers.

The command owns what the scenario needs around it: the embedded services and the model
files (the workers' flow runs use them), and a tenant of its own, created for the run and
deleted afterwards (``--keep-tenant`` leaves it, to look at what was stored).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.db import tenant_admin
from rag_core.embeddings.registry import ensure_models
from rag_core.ops.prefect_smoke import SmokeOptions, SmokeReport, project_dir, run_prefect_smoke

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]

prefect_app = typer.Typer(help="The Prefect deployments of prefect.yaml.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(prefect_app, name="prefect")


@prefect_app.command("smoke")
@fail_cleanly
def smoke(
    documents: Annotated[int, typer.Option(
        min=1, help="SciFact documents in the job (enough that it splits)")] = 600,
    workers: Annotated[int, typer.Option(min=2, max=8, help="Prefect workers")] = 2,
    timeout: Annotated[float, typer.Option(min=10, help="seconds a step may take")] = 900.0,
    project: Annotated[Path | None, typer.Option(
        help="folder of prefect.yaml and flows/ (default: this checkout)")] = None,
    keep_tenant: Annotated[bool, typer.Option(
        "--keep-tenant", help="leave the run's tenant and its data in place")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a private Prefect server, deploy prefect.yaml, start workers, run one ingestion
    job split between them; check every worker took part and nothing was stored twice."""
    settings = get_settings()
    folder = project_dir(project)
    options = SmokeOptions(documents=documents, workers=workers, timeout_s=timeout)
    with Platform(settings) as platform:
        platform.ensure_services()
        ensure_models(settings.state_dir)
        with platform.admin_connection() as conn:
            tenant = tenant_admin.create_tenant(conn, display_name="rag prefect smoke")
        report: SmokeReport | None = None
        try:
            report = run_prefect_smoke(platform.database, tenant, project=folder,
                                       env=os.environ, source_roots=settings.source_roots,
                                       options=options)
        finally:
            # Kept only with a report to say which tenant it is.
            if report is None or not keep_tenant:
                with platform.admin_connection() as conn:
                    tenant_admin.delete_tenant(conn, tenant, redis_keys=platform.tenant_keys)
    _print(report)
    if as_json:
        emit_json(report.as_dict() | {"tenant_id": tenant, "tenant_kept": keep_tenant})
    if not report.ok:
        raise typer.Exit(code=1)


def _print(report: SmokeReport) -> None:
    table = Table(title="rag prefect smoke: one ingestion job, split")
    for column in ("worker", "flow runs", "items", "chunks"):
        table.add_column(column)
    for share in report.workers:
        table.add_row(share.worker, ", ".join(share.flow_runs), str(share.items),
                      str(share.chunks))
    console.print(table)
    job = report.job
    console.print(f"job {job.get('job_id')}: {job.get('status')}, {job.get('read')} read, "
                  f"{job.get('chunks')} chunks; duplicates stored: {report.duplicates}; "
                  f"{report.elapsed_s} s ({report.phases_s})", highlight=False)
    for problem in report.problems:
        console.print(f"problem: {problem}", style="bold red", highlight=False, markup=False)
