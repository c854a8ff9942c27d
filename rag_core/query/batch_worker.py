"""The background runner of batch jobs: one daemon thread per worker process.

It claims a job (:class:`~rag_core.query.batch_jobs.BatchJobs`), asks the questions not yet
answered in groups of ``group_size`` through :func:`~rag_core.query.batch_run.answer_group`
(the batch-query flow's own step, so a job is answered, limited and audited exactly as a
flow run; the job's id is the parent of its audit rows), records each group's answers as
events, and finishes the job with a summary event. Groups of at most ``batch_size`` (5)
questions make the events trickle as each LLM call returns.

Failure model:

* a group hit by an outage keeps going (its questions get their typed codes, recorded like
  any answer) and the job goes on;
* a worker that dies stops renewing its lease; once the lease has passed another worker
  claims the job and asks only what has no answer event yet. A job that has been claimed
  ``max_attempts`` times without finishing (its workers keep dying on it) is failed rather
  than killing every worker in turn;
* any other exception that escapes a job fails it with a summary event carrying the code
  (the traceback goes to the log, never into an event); a database outage instead hands the
  job back for a later attempt. The thread itself never dies of one job.

``stop()`` lets the current group finish, then hands the job back (its lease ends now) so
another worker continues at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from types import TracebackType

import psycopg

from rag_core.codes import ErrorCategory, ErrorCode
from rag_core.errors import RagCoreError
from rag_core.query.batch_jobs import BatchJobs, ClaimedJob
from rag_core.query.batch_run import BatchSummary, answer_group
from rag_core.query.service import QueryService

_log = logging.getLogger(__name__)

#: Longest pause between claims while the database keeps failing them.
MAX_BACKOFF_S = 30.0


def default_owner() -> str:
    """A lease owner naming this process: ``hostname:pid:random`` (the random part tells
    apart two workers of one process, and a pid reused after a restart)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


def _is_outage(exc: BaseException) -> bool:
    """A dependency is away (worth another attempt later), not a bug or a refusal."""
    if isinstance(exc, RagCoreError):
        return exc.code.category is ErrorCategory.UNAVAILABLE
    return isinstance(exc, psycopg.OperationalError)


def _failure(exc: BaseException) -> tuple[ErrorCode, str]:
    """The code and the public message of a failed job: our own errors' messages, never a
    driver's text or a traceback."""
    if isinstance(exc, RagCoreError):
        return exc.code, str(exc)
    if isinstance(exc, psycopg.Error):
        return ErrorCode.DATABASE_ERROR, "the database failed the batch job"
    return ErrorCode.INTERNAL_ERROR, f"unexpected {type(exc).__name__}"


class _LeaseKeeper:
    """Renews a job's lease every third of its length while the job runs, so a slow group
    (an LLM retrying) never lets the lease pass while its worker is alive. ``lost`` once
    the lease is no longer this worker's (taken over after a long pause, say)."""

    def __init__(self, jobs: BatchJobs, job: ClaimedJob) -> None:
        self._jobs = jobs
        self._job = job
        self._done = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"batch-lease-{job.batch_id[:8]}")

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def _beat(self) -> None:
        while not self._done.wait(self._job.lease_s / 3):
            try:
                if not self._jobs.renew(self._job):
                    self._lost.set()
                    return
            except Exception as exc:  # the database away: try again, the lease may hold
                _log.warning("batch %s: lease not renewed (%s)", self._job.batch_id, exc)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()


class BatchWorker:
    """Runs batch jobs in a background thread (``start``/``stop``), or one at a time
    (``run_once``)."""

    def __init__(self, jobs: BatchJobs, service: QueryService, *, owner: str,
                 poll_interval_s: float = 0.5, lease_s: float = 30.0, group_size: int = 5,
                 max_attempts: int = 3) -> None:
        self.jobs = jobs
        self.service = service
        self.owner = owner
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s
        self.group_size = max(1, group_size)
        self.max_attempts = max_attempts
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifetime --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (a no-op while it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="batch-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 60.0) -> bool:
        """Stop after the current group (its job handed back); True once the thread ended
        within ``timeout`` seconds."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """``stop()``, for :meth:`rag_core.composition.Platform.close`."""
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                worked = self.run_once()
                failures = 0
            except Exception as exc:  # claiming failed (the database away): back off
                failures += 1
                worked = False
                _log.warning("batch worker %s: no job claimed (%s: %s)", self.owner,
                             type(exc).__name__, exc)
            if not worked:
                backoff = min(self.poll_interval_s * 2 ** min(failures, 10), MAX_BACKOFF_S)
                self._stopping.wait(max(self.poll_interval_s, backoff))

    # --- one job ---------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Claim one job and run it to its end (or until ``stop``); False when none waited.
        Only the claim may raise: what goes wrong in a job is the job's outcome."""
        job = self.jobs.claim(self.owner, self.lease_s)
        if job is None:
            return False
        summary = BatchSummary()
        with _LeaseKeeper(self.jobs, job) as lease:
            try:
                self._run(job, lease, summary)
            except Exception as exc:
                self._abandon(job, summary, exc)
        return True

    def _run(self, job: ClaimedJob, lease: _LeaseKeeper, summary: BatchSummary) -> None:
        work = self.jobs.work(job)
        summary.questions = len(work.questions)
        for answer in work.answered:  # recorded by an earlier holder of the lease
            summary.record(answer)
        if job.attempts > self.max_attempts:
            _log.error("batch %s: claimed %d times without finishing; failed", job.batch_id,
                       job.attempts)
            self.jobs.finish(job, summary, error_code=ErrorCode.INTERNAL_ERROR,
                             error=f"the batch was claimed {job.attempts} times and its "
                                   "worker stopped each time before finishing it")
            return
        remaining = work.remaining
        for offset in range(0, len(remaining), self.group_size):
            if self._stopping.is_set():
                self.jobs.release(job)
                _log.info("batch %s: handed back by %s (stopping)", job.batch_id, self.owner)
                return
            if lease.lost:
                _log.warning("batch %s: lease lost by %s; left to its new holder",
                             job.batch_id, self.owner)
                return
            group = remaining[offset:offset + self.group_size]
            answers = answer_group(self.service, job.tenant_id, group,
                                   parent_request_id=job.batch_id)
            if not self.jobs.record_answers(job, answers):
                _log.warning("batch %s: lease lost by %s before its answers were recorded",
                             job.batch_id, self.owner)
                return
            for answer in answers:
                summary.record(answer)
        self.jobs.finish(job, summary)

    def _abandon(self, job: ClaimedJob, summary: BatchSummary, exc: Exception) -> None:
        """A job that raised: handed back after an outage, else failed with its code."""
        if _is_outage(exc):
            _log.warning("batch %s: %s; handed back for a later attempt", job.batch_id, exc)
            with contextlib.suppress(Exception):  # else its lease runs out by itself
                self.jobs.release(job)
            return
        code, message = _failure(exc)
        _log.error("batch %s failed: %s", job.batch_id, code, exc_info=exc)
        try:
            self.jobs.finish(job, summary, error_code=code, error=message)
        except Exception as second:  # the lease runs out; a later attempt tries again
            _log.error("batch %s: failure not recorded (%s)", job.batch_id, second)
