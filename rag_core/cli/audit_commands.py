"""``rag audit flush``: write the audit rows that wait in this machine's spool.

Every process that answers questions flushes the spool once when it starts, and the
``flush-audit-spool`` flow does it on a schedule; this command is for an operator who has
just brought the database back and wants the audit log complete now (and to see what was
quarantined).
"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(help="The audit log and its local spool.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("flush")
    @fail_cleanly
    def flush(as_json: JsonFlag = False) -> None:
        """Write spooled audit rows to the database; unreadable lines go to quarantine."""
        with Platform(get_settings()) as platform:
            report = platform.audit_log.flush_spool()
            quarantine = platform.audit_log.quarantine_dir
        console.print(f"audit spool: {report.flushed} row(s) written, {report.quarantined} "
                      f"quarantined, {report.waiting} still waiting", highlight=False)
        if report.quarantined:
            console.print(f"quarantined lines are kept in {quarantine}", highlight=False,
                          markup=False)
        if as_json:
            emit_json(report.as_dict())
