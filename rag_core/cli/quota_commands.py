"""``rag quota settle`` and ``rag quota usage``: the token quota from the command line.

``settle`` charges the quota for what was answered while Redis was away, from the debts in
the audit log (:mod:`rag_core.limits.settlement`). A query process does it by itself when
Redis comes back; this command covers a process that ended before that, and is safe to run
any number of times (each debt is charged once).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.common.tenancy import parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.limits.settlement import debtor_tenants

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
Tenants = Annotated[list[str] | None, typer.Option(
    "--tenant", help="a tenant to settle (repeatable); default: every tenant with debts")]

quota_app = typer.Typer(help="The daily token quota.", no_args_is_help=True)


@quota_app.command("settle")
@fail_cleanly
def settle(tenants: Tenants = None, as_json: JsonFlag = False) -> None:
    """Charge the quota for tokens spent while Redis was away (idempotent)."""
    chosen = [parse_tenant_id(t) for t in tenants] if tenants else None
    with Platform(get_settings()) as platform:
        if chosen is None:  # finding them needs the admin connection (it sees every tenant)
            with platform.admin_connection() as conn:
                chosen = debtor_tenants(conn, datetime.now(UTC))
        report = platform.token_quota.settle_outage(chosen)
    for tenant in report.tenants:
        console.print(f"{tenant.tenant_id}: {tenant.charged} of {tenant.debts} debts charged "
                      f"now ({tenant.tokens_charged} tokens)", highlight=False)
    console.print(f"{report.charged} debts, {report.tokens_charged} tokens charged",
                  highlight=False)
    if as_json:
        emit_json(report.as_dict())


@quota_app.command("usage")
@fail_cleanly
def usage(tenant: Annotated[str, typer.Option("--tenant")], as_json: JsonFlag = False) -> None:
    """The tenant's token usage today (by the Redis server's clock)."""
    tenant_id = parse_tenant_id(tenant)
    with Platform(get_settings()) as platform:
        today = platform.token_quota.inner.usage(tenant_id)
    console.print(f"{today.tenant_id} {today.day}: {today.used} used, {today.reserved} "
                  f"reserved of {today.quota}", highlight=False)
    if as_json:
        emit_json(today.as_dict())


def register(app: typer.Typer) -> None:
    app.add_typer(quota_app, name="quota")
