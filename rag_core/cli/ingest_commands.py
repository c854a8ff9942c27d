"""``rag ingest``: run or resume an ingestion job with a progress bar."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.db import tenant_admin
from rag_core.db.pool import Database
from rag_core.errors import UnknownTenantError

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def require_tenant(db: Database, tenant: TenantId) -> None:
    with db.tenant_session(tenant) as conn:
        if conn.execute("SELECT 1 FROM rag.tenants WHERE tenant_id = %s",
                        [tenant]).fetchone() is None:
            raise UnknownTenantError(tenant)


def register(app: typer.Typer) -> None:
    @app.command()
    @fail_cleanly
    def ingest(
        path: Annotated[Path, typer.Argument(help="folder of .txt/.md/.html, or BEIR .jsonl[.gz]")],
        tenant: Annotated[str, typer.Option("--tenant", help="tenant id (tn_ + 32 hex)")],
        workers: Annotated[int | None, typer.Option(min=1, help="worker threads")] = None,
        create_tenant: Annotated[bool, typer.Option(
            "--create-tenant", help="create the tenant if it does not exist")] = False,
        resume: Annotated[bool, typer.Option(help="resume an unfinished job of this source")]
        = True,
        as_json: JsonFlag = False,
    ) -> None:
        """Ingest PATH for a tenant: validate, chunk, embed, store (idempotent, resumable)."""
        tenant_id = parse_tenant_id(tenant)
        with Platform(get_settings()) as platform:
            if create_tenant:
                with platform.admin_connection() as conn:
                    tenant_admin.create_tenant(conn, tenant_id, "created by rag ingest")
            require_tenant(platform.database, tenant_id)
            runner = platform.ingestion
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console,
                          disable=not console.is_terminal) as bar:
                read_task = bar.add_task("read + validate", total=None)
                done_task = bar.add_task("chunk + embed + store", total=None)

                def progress(stage: str, count: int) -> None:
                    if stage == "read":
                        bar.advance(read_task, count)
                    elif stage == "planned":
                        bar.update(read_task, total=count, completed=count)
                        bar.update(done_task, total=count)
                    else:
                        bar.advance(done_task, count)

                result = runner.run(tenant_id, path, workers=workers, progress=progress,
                                    resume=resume)
        summary = result.summary
        console.print(
            f"job {summary.job_id} {summary.status}: read {summary.read}, ingested "
            f"{summary.ingested}, duplicates {summary.duplicate}, rejected {summary.rejected}, "
            f"failed {summary.failed}, chunks {summary.chunks}"
            f"{' (resumed)' if result.resumed else ''} in "
            f"{result.plan_s + result.process_s:.1f}s")
        if as_json:
            emit_json(result.as_dict())
        if summary.status == "failed":
            raise typer.Exit(code=1)

    @app.command("ingest-worker")
    @fail_cleanly
    def ingest_worker(
        job_id: Annotated[str, typer.Argument(help="an ingestion job planned by `rag ingest`")],
        tenant: Annotated[str, typer.Option("--tenant")],
        as_json: JsonFlag = False,
    ) -> None:
        """Join an existing ingestion job as one more worker (any machine, any process)."""
        tenant_id = parse_tenant_id(tenant)
        with Platform(get_settings()) as platform:
            stats = platform.ingestion.work(tenant_id, job_id)[0]
            summary = platform.ingestion.finalize(tenant_id, job_id)
        console.print(f"worker done: {stats.items} items in {stats.batches} batches; "
                      f"job {summary.status}, {summary.pending} pending")
        if as_json:
            emit_json({"worker": asdict(stats), "job": summary.as_dict()})
