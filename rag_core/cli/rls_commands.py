"""``rag rls-overhead``: measure what the row-level security policy costs one tenant search,
now, from an admin host.

The same paired measurement as the serving process's sampler (:mod:`rag_core.ops.
rls_overhead`): the product's search with the policy in force and with only its explicit
tenant filter, in server time. For an operator confirming the ``RagRlsOverheadHigh`` alert
(docs/runbook.md), or measuring where no sampler runs (a ``RAG_RUNTIME_ONLY`` service has no
admin connection). Needs the admin connection; refused in a runtime-only process.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.common.tenancy import parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.ops.rls_overhead import measure_rls_overhead

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
#: The warning alert's threshold (deploy/prometheus/alerts.yml, RagRlsOverheadHigh).
ALERT_THRESHOLD_MS = 100.0


def register(app: typer.Typer) -> None:
    @app.command("rls-overhead")
    @fail_cleanly
    def rls_overhead(
        tenant: Annotated[str | None, typer.Option(
            "--tenant", help="the tenant to search; default: the first tenant with vectors")
        ] = None,
        repeats: Annotated[int, typer.Option(min=1, max=50, help="pairs of runs")] = 5,
        as_json: JsonFlag = False,
    ) -> None:
        """Measure the RLS policy's cost in one tenant search (with minus without it)."""
        chosen = parse_tenant_id(tenant) if tenant is not None else None
        settings = get_settings()
        with Platform(settings) as platform:
            sample = measure_rls_overhead(
                platform.database, platform.admin_connection, platform.vector_store,
                k=settings.retrieval_k, repeats=repeats,
                statement_timeout_ms=settings.db_statement_timeout_ms, tenant=chosen)
        if sample is None:
            console.print("no tenant holds vectors of the configured model: nothing to "
                          "measure", highlight=False)
            if as_json:
                emit_json({"ok": True, "measured": False})
            return
        shown = sample.as_dict()
        above = shown["overhead_ms"] > ALERT_THRESHOLD_MS
        console.print(
            f"{sample.tenant_id}: RLS costs {shown['overhead_ms']} ms a search (median "
            f"{len(sample.enforced_ms)} runs with the policy minus without it; alert above "
            f"{ALERT_THRESHOLD_MS:.0f} ms{': ABOVE' if above else ''})", highlight=False)
        if as_json:
            emit_json({"ok": True, "measured": True, **shown,
                       "threshold_ms": ALERT_THRESHOLD_MS, "above_threshold": above})
