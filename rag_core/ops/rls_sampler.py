"""The RLS overhead sampler of a serving process: one measurement every interval, never on
the request path, exported as metrics.

What it measures is :mod:`rag_core.ops.rls_overhead`'s paired difference (the product's
search with the policy in force minus the same search with only its explicit tenant filter,
in server time). Where and how often it runs:

- **In ``rag serve``'s workers, in a daemon thread** started by the app's lifespan: a
  request never waits for it; a sample costs ``2 x (RAG_API__RLS_SAMPLE_REPEATS + 1)``
  searches (a few milliseconds each on a small tenant), every
  ``RAG_API__RLS_SAMPLE_INTERVAL_S`` (default 60 s; 0 turns it off).
- **One worker per database and state folder samples.** Each worker's thread tries a
  non-blocking ``flock`` on ``<state_dir>/rls_sampler-<database>.lock`` (:func:`lock_path`)
  at every interval; the holder keeps it for its life, and when it dies the kernel releases
  it and another worker takes over at its next try. Every worker sampling would multiply
  the cost by the number of workers and add no information: the policy's cost is the
  database's, not a worker's.
- **Only where the admin connection is allowed**: the embedded default and an admin
  ``DATABASE_URL``. The application role cannot run a search without the policy (that is
  the point of the role), so a ``RAG_RUNTIME_ONLY`` process, or one given only
  ``RAG_APP_DATABASE_URL``, does not sample (:func:`why_not_sampled`) and its
  ``rag_rls_samples_total`` stays absent; measure from an admin host with
  ``rag rls-overhead``.

Exported: ``rag_rls_overhead_seconds`` (a histogram of the samples, a negative difference,
i.e. noise, counted as 0) and ``rag_rls_samples_total{outcome=ok|no_tenant|failed}``. Never
the tenant a sample was taken on.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict

from rag_core.common.metrics import RLS_OVERHEAD_SECONDS, RLS_SAMPLES
from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.errors import RagCoreError
from rag_core.ops.rls_overhead import AdminConnections, RlsOverheadSample, measure_rls_overhead
from rag_core.retrieval.vector_store import VectorStore

__all__ = ["Outcome", "RlsSampler", "lock_path", "sampler_for", "why_not_sampled"]

_log = logging.getLogger(__name__)

Outcome = Literal["ok", "no_tenant", "failed"]
#: One sample: the tenant id after which to look for the next tenant ("" = the first).
Measure = Callable[[str], RlsOverheadSample | None]


class RlsSampler:
    """Calls ``measure`` every ``interval_s`` while this process holds ``lock_path`` and
    exports each result (see the module docstring). ``sample_once`` takes one sample now."""

    def __init__(self, measure: Measure, *, interval_s: float, lock_path: Path) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._measure = measure
        self.interval_s = interval_s
        self.lock_path = lock_path
        self.last: RlsOverheadSample | None = None
        self._after = ""  # round robin over tenants: the last sampled tenant id
        self._failing = False
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def holds_lock(self) -> bool:
        return self._lock_fd is not None

    def sample_once(self) -> Outcome:
        """Take one sample and export it; a database or configuration failure is counted
        and logged (once per run of failures), never raised."""
        try:
            sample = self._measure(self._after)
        except (psycopg.Error, RagCoreError, OSError) as exc:
            RLS_SAMPLES.labels("failed").inc()
            if not self._failing:
                _log.warning("RLS overhead sample failed (%s: %s); retrying every %.0f s",
                             type(exc).__name__, str(exc).strip()[:300], self.interval_s)
            self._failing = True
            return "failed"
        self._failing = False
        if sample is None:
            RLS_SAMPLES.labels("no_tenant").inc()
            return "no_tenant"
        self._after = sample.tenant_id
        self.last = sample
        RLS_OVERHEAD_SECONDS.observe(max(sample.overhead_s, 0.0))
        RLS_SAMPLES.labels("ok").inc()
        if sample.rows_enforced != sample.rows_bypassed:
            # Not a leak (the run without the policy is the admin's), but the policy and the
            # explicit filter disagree about the tenant's rows: worth an operator's look.
            _log.warning("RLS overhead sample: %d rows with the policy, %d without",
                         sample.rows_enforced, sample.rows_bypassed)
        return "ok"

    def try_lock(self) -> bool:
        """Hold the sampling lock if no other process does (kept until :meth:`close`)."""
        if self._lock_fd is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def start(self) -> None:
        """Sample every interval in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rls-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.try_lock():
                    self.sample_once()
            except Exception:  # the thread must outlive a bug in one sample; say so loudly
                RLS_SAMPLES.labels("failed").inc()
                _log.exception("RLS overhead sampler: unexpected error")

    def close(self) -> None:
        """Stop the thread (after its current sample) and release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


def why_not_sampled(settings: Settings) -> str | None:
    """Why a process under ``settings`` cannot (or is told not to) sample; None if it can."""
    if settings.api.rls_sample_interval_s == 0:
        return "RAG_API__RLS_SAMPLE_INTERVAL_S is 0"
    if settings.runtime_only:
        return "RAG_RUNTIME_ONLY: this process holds no admin connection"
    if settings.database_url is None and settings.app_database_url is not None:
        return "only RAG_APP_DATABASE_URL is set: no admin connection"
    return None


def lock_path(settings: Settings) -> Path:
    """The sampling lock of the database ``settings`` name: one per database (the embedded
    server's database name, else a hash of the admin URL's host, port and database), so
    services of different databases sharing a state folder each sample their own."""
    if settings.database_url is None:
        where = f"embedded/{settings.embedded_database}"
    else:
        params = conninfo_to_dict(settings.database_url)
        where = "/".join(str(params.get(p, "")) for p in ("host", "port", "dbname"))
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return settings.state_dir / f"rls_sampler-{digest}.lock"


def sampler_for(settings: Settings, database: Database, admin: AdminConnections,
                store: VectorStore) -> RlsSampler | None:
    """The sampler of a serving process under ``settings`` (not started), or None (logged
    once) when it cannot sample."""
    reason = why_not_sampled(settings)
    if reason is not None:
        _log.info("RLS overhead sampler off: %s", reason)
        return None

    def measure(after: str) -> RlsOverheadSample | None:
        return measure_rls_overhead(database, admin, store, k=settings.retrieval_k,
                                    repeats=settings.api.rls_sample_repeats,
                                    statement_timeout_ms=settings.db_statement_timeout_ms,
                                    after=after)

    return RlsSampler(measure, interval_s=settings.api.rls_sample_interval_s,
                      lock_path=lock_path(settings))
