"""Prefect flow ``rebalance``: tenants that grew past the threshold get a vector partition
and HNSW graph of their own, shrunken ones go back to the shared partition, interrupted
moves are finished (``rag tenant rebalance`` as a scheduled job; :mod:`rag_core.ops.rebalance`).

Online: every move is batched and takes its locks with a timeout, so queries and ingestion
go on. The worker needs the admin connection (DDL; it bypasses RLS to size every tenant):
run it on an admin worker, not one started with ``RAG_RUNTIME_ONLY``. A tenant that stays
busy past every retry is reported and left for the next run; the run then fails, so the
miss is visible in Prefect.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows._resources import platform
from rag_core.errors import DatabaseError
from rag_core.ops.rebalance import rebalance as rebalance_tenants


@task(name="rebalance-tenants", retries=1, retry_delay_seconds=[60])
def rebalance_task(dry_run: bool) -> dict[str, Any]:
    shared = platform()
    with shared.admin_connection() as conn:
        report = rebalance_tenants(conn, shared.settings.retrieval, dry_run=dry_run)
    if not report.ok:
        raise DatabaseError(f"rebalance left {len(report.failed)} tenant(s) for the next run: "
                            f"{report.failed}")
    return report.as_dict()


@flow(name="rebalance", log_prints=True)
def rebalance(dry_run: bool = False) -> dict[str, Any]:
    """Promote, demote and finish moves of tenants by size (see the module docstring)."""
    report = rebalance_task(dry_run)
    get_run_logger().info("rebalance: %s", {k: report[k] for k in ("dry_run", "done")})
    return report
