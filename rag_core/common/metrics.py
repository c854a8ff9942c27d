"""Process metrics (Prometheus client registry) and their exposition.

Counters that matter for alerting live in one registry so that every module increments the
same object and the API (``/metrics``), a Prefect worker or the CLI can expose or print
them. The metrics themselves are defined in :mod:`rag_core.common.metric_defs` and
re-exported here, the one import path for producers and tests alike.

Several workers
---------------
prometheus_client's multiprocess mode is switched on by the environment variable
``PROMETHEUS_MULTIPROC_DIR``, read by the library itself when it is first imported (it then
keeps every value in an mmap'ed file per process in that folder). Set it, to an empty folder
that only this service's workers use, before the workers start (uvicorn ``--workers``,
gunicorn); :func:`render_metrics` then answers with the sum over every worker whichever
worker serves the scrape. A supervisor that learns a worker died calls
:func:`mark_worker_dead` (gunicorn's ``child_exit`` hook) so its live-only gauges stop
counting; its counters stay in the sum, as Prometheus expects of a counter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)

from rag_core.common.metric_defs import (
    AUDIT_SPOOL_QUARANTINED,
    BREAKER_OPEN_SECONDS,
    BREAKER_STATE,
    CACHE_LOOKUPS,
    CONCURRENCY_WAIT_SECONDS,
    CONCURRENCY_WAITS,
    CROSS_TENANT_ROWS_BLOCKED,
    HTTP_REQUEST_SECONDS,
    HTTP_REQUESTS,
    HTTP_REQUESTS_IN_FLIGHT,
    LIMIT_REJECTIONS,
    LLM_CALL_SECONDS,
    LLM_CALLS,
    LLM_RETRIES,
    LLM_TOKENS,
    QUESTIONS,
    QUOTA_USAGE_FRACTION,
    REGISTRY,
    RLS_OVERHEAD_SECONDS,
    RLS_SAMPLES,
    STAGE_SECONDS,
    Stage,
)

__all__ = [
    "AUDIT_SPOOL_QUARANTINED",
    "BREAKER_OPEN_SECONDS",
    "BREAKER_STATE",
    "CACHE_LOOKUPS",
    "CONCURRENCY_WAITS",
    "CONCURRENCY_WAIT_SECONDS",
    "CROSS_TENANT_ROWS_BLOCKED",
    "HTTP_REQUESTS",
    "HTTP_REQUESTS_IN_FLIGHT",
    "HTTP_REQUEST_SECONDS",
    "LIMIT_REJECTIONS",
    "LLM_CALLS",
    "LLM_CALL_SECONDS",
    "LLM_RETRIES",
    "LLM_TOKENS",
    "MULTIPROC_DIR_VARIABLE",
    "QUESTIONS",
    "QUOTA_USAGE_FRACTION",
    "REGISTRY",
    "RLS_OVERHEAD_SECONDS",
    "RLS_SAMPLES",
    "STAGE_SECONDS",
    "Stage",
    "counter_value",
    "forget_dead_workers",
    "mark_worker_dead",
    "multiprocess_dir",
    "render_metrics",
]

#: The variable prometheus_client itself reads to choose its multiprocess value class.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# prometheus_client's multiprocess module carries no annotations: typed here once.
_collect_files = cast(Callable[[CollectorRegistry, str], object],
                      multiprocess.MultiProcessCollector)
_mark_process_dead = cast(Callable[[int, str], None], multiprocess.mark_process_dead)


def multiprocess_dir() -> str | None:
    """The multiprocess folder, or None in single-process mode.

    Read from the environment, not from :class:`~rag_core.config.Settings`: the variable is
    prometheus_client's own convention, which the library reads at import time, before any
    settings exist; a setting could only disagree with what the library already did.
    """
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def render_metrics() -> tuple[bytes, str]:
    """The exposition text and its content type: summed over every worker's files when
    multiprocess mode is on (a fresh registry each time: the collector reads the files at
    each scrape), else this process's registry."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    _collect_files(registry, folder)  # registers itself in ``registry``
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Forget worker ``pid``'s live-only gauges (its in-flight requests, its breaker
    reading) after it exited; a no-op in single-process mode."""
    folder = multiprocess_dir()
    if folder is not None:
        _mark_process_dead(pid, folder)


def forget_dead_workers() -> list[int]:
    """Forget the live-only gauges of every worker whose process is gone (called by each
    worker at start: uvicorn replaces a dead worker, and the newcomer cleans up after it,
    with no hook in the supervisor needed). Returns the pids forgotten."""
    folder = multiprocess_dir()
    if folder is None:
        return []
    pids = set()
    for path in Path(folder).glob("*.db"):
        tail = path.stem.rsplit("_", 1)[-1]  # gauge_livesum_<pid>.db, counter_<pid>.db
        if tail.isdigit():
            pids.add(int(tail))
    dead = sorted(pid for pid in pids if not psutil.pid_exists(pid))
    for pid in dead:
        mark_worker_dead(pid)
    return dead


def counter_value(counter: Counter) -> float:
    """Current value of an unlabelled counter (for reports and tests)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0
