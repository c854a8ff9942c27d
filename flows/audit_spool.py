"""Prefect flow ``flush-audit-spool``: write the audit rows that wait in this machine's spool.

Processes that answer questions flush the spool when they start, but a long-running worker
that spooled rows during a database outage starts no new process to do it; this flow, on a
schedule (``prefect.yaml``: every 10 minutes), makes sure the rows reach the audit log soon
after the database is back. While the database is still away the task fails (and retries):
the rows stay spooled and the failed run is visible in Prefect.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows._resources import platform


@task(name="flush-spool", retries=2, retry_delay_seconds=[30, 120])
def flush_spool() -> dict[str, int]:
    return platform().audit_log.flush_spool().as_dict()


@flow(name="flush-audit-spool", log_prints=True)
def flush_audit_spool() -> dict[str, int]:
    report = flush_spool()
    get_run_logger().info("flush-audit-spool: %s", report)
    return report
