"""``rag tenant rebalance [--dry-run] [--json]``: give tenants that grew past the threshold a
vector partition and HNSW graph of their own, move shrunken ones back to the shared
partition, finish interrupted moves, drop orphan partitions (:mod:`rag_core.ops.rebalance`).
Online: searches and ingestion of every tenant go on while it runs. Needs the admin
connection (DDL), which must bypass row-level security to see every tenant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.ops.rebalance import rebalance

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def register(tenant_app: typer.Typer) -> None:
    @tenant_app.command("rebalance")
    @fail_cleanly
    def tenant_rebalance(
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="only say which tenants would move")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Promote tenants past RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS to their own
        partition, demote those below RAG_RETRIEVAL__DEMOTE_BELOW_ROWS (online)."""
        settings = get_settings()
        with Platform(settings) as platform, platform.admin_connection() as conn:
            report = rebalance(conn, settings.retrieval, dry_run=dry_run)
        for decision in report.decisions:
            console.print(f"{decision.tenant_id}: {decision.action} ({decision.rows} rows, "
                          f"plan {decision.plan})", highlight=False)
        if not report.decisions:
            console.print("every tenant has the plan its size calls for", highlight=False)
        for done in report.done:
            console.print(f"done: {done}", highlight=False)
        for failed in report.failed:
            console.print(f"failed: {failed}", style="yellow", highlight=False)
        if as_json:
            emit_json(report.as_dict())
        if not report.ok:
            raise typer.Exit(code=1)
