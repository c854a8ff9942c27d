"""A write-behind audit sink: the HTTP service audits every request without a database round
trip on its hot path.

:class:`BufferedAuditLog` has :class:`~rag_core.query.audit.AuditLog`'s ``write`` but stops
at the local spool: ``write`` turns the records into their stored form (hashed, reduced to
the storage mode, as the audit log does), appends them to this writer's own segment of the
audit spool (``audit-<pid>-<tag>.jsonl``, opened ``O_APPEND``) with one ``os.write`` of whole
lines, and returns. A writer thread moves them into the database every
``RAG_API__AUDIT_FLUSH_INTERVAL_S``, or as soon as ``RAG_API__AUDIT_FLUSH_ROWS`` wait: it
claims the segment (renames it ``.flushing``, the spool's own claim, so new lines start a
new segment), fsyncs it, inserts its rows with the audit log's delivery (multi-row INSERTs,
``ON CONFLICT DO NOTHING``, quarantine of a line that can never land) and unlinks it only
after the commit.

Durability, said plainly: when ``write`` returns the row is in the kernel, so a crash of
the process (SIGKILL included) loses nothing: a line torn by a kill mid-write is
quarantined by the flush, and every line before it is delivered. The disk has the row
within one interval (the writer fsyncs then); an OS crash or a power cut may lose the rows
of the last interval. The direct audit log fsyncs every append; the hot path cannot pay that.

Nothing else flushes a live writer's segment: it holds an exclusive flock on it, which
claims respect (:mod:`rag_core.query.audit_spool`). The kernel drops the flock when the
process dies, so a dead writer's segment, and a claimed file left because the database was
away, is picked up by ``rag audit flush``, the ``flush-audit-spool`` flow or the start-up
flush of the next process, exactly like any other spool file.

The writer survives its own failures: a flush that raises is logged, counted
(``rag_audit_writer_failures_total``), retried after an exponential back-off while the rows
wait in the spool; a writer thread that died anyway is restarted by the next ``write``.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from rag_core.common.metrics import REGISTRY
from rag_core.common.processes import fsync_folder
from rag_core.query.audit import AuditLog, AuditRecord
from rag_core.query.audit_spool import encode_lines, write_all

__all__ = ["BufferedAuditLog", "WriterStats"]

_log = logging.getLogger(__name__)

#: The longest pause between two delivery attempts while the database keeps failing (or
#: the interval itself, if that is longer).
_MAX_BACKOFF_S = 10.0

AUDIT_WRITER_BUFFERED = Gauge(
    "rag_audit_writer_buffered_rows",
    "Audit rows accepted by a buffered writer and not in the database yet (in its spool "
    "segment or in claimed files that wait for the database).",
    multiprocess_mode="livesum", registry=REGISTRY)  # summed over live workers
AUDIT_WRITER_WRITTEN = Counter(
    "rag_audit_writer_rows_written", "Audit rows a buffered writer inserted.",
    registry=REGISTRY)
AUDIT_WRITER_FAILURES = Counter(
    "rag_audit_writer_failures",
    "Flushes of a buffered audit writer that failed (its rows stay spooled and are retried).",
    registry=REGISTRY)
AUDIT_WRITER_RESTARTS = Counter(
    "rag_audit_writer_restarts", "Buffered audit writer threads found dead and restarted.",
    registry=REGISTRY)


@dataclass(frozen=True)
class WriterStats:
    """One writer's counts since it was built (for tests, ``/readyz`` and reports)."""

    buffered: int  # accepted, not in the database yet (segment + claimed files)
    written: int  # inserted by this writer
    quarantined: int  # lines its flushes set aside (see the spool)
    failures: int  # flushes that raised
    restarts: int  # dead writer threads restarted
    alive: bool  # the writer thread is running

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


class BufferedAuditLog:
    """Audit rows spooled on ``write``, inserted behind by a thread (see the module notes).

    ``close_timeout_s`` bounds :meth:`close`: what its final flush cannot write in that time
    (the database is away) stays in the spool for the next flush.
    """

    def __init__(self, audit: AuditLog, *, flush_interval_s: float, flush_rows: int,
                 close_timeout_s: float = 10.0) -> None:
        self._audit = audit
        self._spool = audit.jsonl_spool
        self._interval = flush_interval_s
        self._flush_rows = flush_rows
        self._close_timeout_s = close_timeout_s
        # The tag makes the name this writer's alone (two writers of one process, pid reuse).
        self._segment = self._spool.segment_path(f"{os.getpid()}-{secrets.token_hex(4)}")
        # Guards the segment: its descriptor, its row count, the claimed files' counts.
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment_rows = 0
        self._unsynced = False  # lines (or a new segment name) not fsynced yet
        self._torn = False  # a failed write may have left half a line: end it first
        self._claimed: dict[Path, int] = {}
        self._closed = False
        # The writer thread and its controls.
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry_at = 0.0
        self._failures_in_row = 0
        self._written = self._quarantined = self._failures = self._restarts = 0

    # --- the hot path ----------------------------------------------------------------------
    def write(self, records: Sequence[AuditRecord]) -> None:
        """Append ``records`` to this writer's segment and return (no database round trip).

        The lines are in the kernel on return. A write the spool folder refuses (a full
        disk) falls back to the audit log's own write, through to the database: a row is
        never dropped.
        """
        if not records:
            return
        lines = self._audit.stored_lines(records)
        payload = encode_lines(lines)
        due = False
        with self._lock:
            if self._closed:
                appended = False
            else:
                appended = self._append_locked(payload, len(records))
                due = self._segment_rows >= self._flush_rows
        if not appended:
            self._write_through(records, lines)
            return
        AUDIT_WRITER_BUFFERED.inc(len(records))
        self._supervise()
        if due:
            self._wake.set()

    def _append_locked(self, payload: bytes, rows: int) -> bool:
        try:
            if self._fd is None:
                self._fd = self._spool.open_segment(self._segment)
            if self._torn:
                payload = b"\n" + payload  # a line of its own, not glued to a torn one
            write_all(self._fd, payload)
        except OSError as exc:
            _log.error("audit writer: the spool refused a write (%s); writing through", exc)
            self._torn = self._fd is not None
            return False
        self._torn = False
        self._segment_rows += rows
        self._unsynced = True
        return True

    def _write_through(self, records: Sequence[AuditRecord], lines: list[dict[str, object]],
                       ) -> None:
        if self._closed:  # after close: the durable spool, for the next flush
            self._spool.append(lines)
        else:
            self._audit.write(records)

    # --- what it holds -----------------------------------------------------------------------
    def stats(self) -> WriterStats:
        with self._lock:
            buffered = self._segment_rows + sum(self._claimed.values())
        thread = self._thread
        return WriterStats(buffered=buffered, written=self._written,
                           quarantined=self._quarantined, failures=self._failures,
                           restarts=self._restarts,
                           alive=thread is not None and thread.is_alive())

    def pending(self) -> int:
        """Rows accepted and not in the database yet."""
        return self.stats().buffered

    # --- the writer thread ------------------------------------------------------------------
    def _supervise(self, *, closing: bool = False) -> None:
        """Start the writer thread, or restart it if it died (unless the log is closing)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._thread_lock:
            thread = self._thread
            if (thread is not None and thread.is_alive()) or \
                    (self._stop.is_set() and not closing):
                return
            if thread is not None and not closing:
                self._restarts += 1
                AUDIT_WRITER_RESTARTS.inc()
                _log.error("audit writer: the writer thread was dead; restarted")
            self._thread = threading.Thread(target=self._run, name="audit-writer",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._pause()
                self._tick(final=False)
            self._tick(final=True)
        except BaseException:  # a dying thread is logged; the next write restarts it
            _log.critical("audit writer: the writer thread died; the next write restarts it",
                          exc_info=True)

    def _pause(self) -> None:
        """Until the interval is over, enough rows wait, or the log closes."""
        self._wake.wait(self._interval)
        self._wake.clear()

    def _tick(self, *, final: bool) -> None:
        """Claim and fsync the segment; deliver the claimed files unless backing off. A
        failure is counted and postpones the next delivery; the rows stay spooled."""
        deliver = final or time.monotonic() >= self._retry_at
        try:
            self._rotate(claim=deliver)
            if deliver:
                self._deliver_claimed()
                self._failures_in_row = 0
        except Exception as exc:
            self._failures += 1
            self._failures_in_row += 1
            AUDIT_WRITER_FAILURES.inc()
            backoff = min(self._interval * 2 ** min(self._failures_in_row, 16),
                          max(_MAX_BACKOFF_S, self._interval))
            self._retry_at = time.monotonic() + backoff
            _log.warning("audit writer: flush failed (%s: %s); the rows stay in the spool, "
                         "next attempt in %.1f s", type(exc).__name__, exc, backoff)

    def _rotate(self, *, claim: bool) -> None:
        """Claim the segment when it is delivered now (or has grown to a batch while the
        database is away: claimed files stay one batch each); otherwise fsync it."""
        with self._lock:
            fd, rows = self._fd, self._segment_rows
            if fd is None or not (rows or self._unsynced):
                return
            if claim or rows >= self._flush_rows:
                self._claimed[self._spool.claim_segment(self._segment)] = rows
                self._fd, self._segment_rows, self._torn = None, 0, False
                detached = True
            elif self._unsynced:
                fd = os.dup(fd)  # fsynced outside the lock: writers do not wait for the disk
                detached = False
            else:
                return  # fsynced by an earlier pause, waiting for the back-off to end
            self._unsynced = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)  # a claimed segment's flock goes with its last descriptor
        if detached:
            fsync_folder(self._spool.folder)  # the claimed name (and the segment's creation)

    def _deliver_claimed(self) -> None:
        """Insert every claimed file of this writer; the first failure raises, the files
        not delivered stay for the next attempt (or any other flush)."""
        with self._lock:  # a file another flush delivered is gone from the folder: forget it
            files = set(self._claimed) | set(self._spool.claimed_from(self._segment))
        for path in sorted(files):
            outcome = self._spool.drain_file(path, self._audit.deliver)
            if outcome is None and path.exists():
                continue  # another flusher is delivering it
            delivered, quarantined = outcome or (0, 0)
            with self._lock:
                rows = self._claimed.pop(path, 0)
            AUDIT_WRITER_BUFFERED.dec(rows)
            AUDIT_WRITER_WRITTEN.inc(delivered)
            self._written += delivered
            self._quarantined += quarantined

    # --- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the writer thread after a final flush, waiting at most ``close_timeout_s``.
        What is not in the database by then stays in the spool (fsynced) for the next flush;
        a write after close goes to the spool directly."""
        if self._closed:
            return
        self._stop.set()
        with self._lock:
            work = self._fd is not None or bool(self._claimed)
        if work:
            self._supervise(closing=True)
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(self._close_timeout_s)
            if thread.is_alive():
                _log.warning("audit writer: the final flush did not end within %.1f s; "
                             "its rows stay in the spool", self._close_timeout_s)
        with self._lock:
            self._closed = True
            if self._fd is not None:  # written after the final claim: left for a flush
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            # What is left is the spool's now (any flush takes it), no longer this writer's
            # (cleared: a final flush still running counts nothing twice).
            left = self._segment_rows + sum(self._claimed.values())
            self._segment_rows = 0
            self._claimed.clear()
        AUDIT_WRITER_BUFFERED.dec(left)
