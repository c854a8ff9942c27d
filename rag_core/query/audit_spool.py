"""A durable local queue of JSON lines: where audit rows wait while the database is away.

The audit log promises one row per question even through a database outage, so what is
spooled must survive a crash of the writer, a crash of the flusher, and several processes
writing and flushing at once. Each rule below closes one way of losing or doubling a row:

* **One folder lock** (``fcntl.flock`` on ``.lock``, through
  :func:`~rag_core.common.processes.file_lock`) around every append and every claim. The
  kernel drops a flock when its holder dies, so a SIGKILLed writer never wedges the spool,
  and a claim can never land in the middle of an append.
* **Appends are whole lines**, written and fsynced (and the folder fsynced when the file is
  new) before :meth:`JsonlSpool.append` returns: a row whose append returned is on disk. A
  file whose last line was torn by a killed writer gets a newline first, so the next row
  starts a line of its own instead of being glued to the torn one.
* **A flusher claims a file by renaming it** (``audit-<pid>.jsonl`` to
  ``audit-<pid>.<token>.flushing``) under the lock *before* reading it. An appender that
  comes next creates a new file; nothing is appended to a file after it was read, so the
  unlink after delivery cannot take an unread row with it.
* **A live writer's segment is left to it.** A buffered writer
  (:mod:`rag_core.query.audit_writer`) keeps its own pending file open under an exclusive
  flock and claims it itself; a claim skips a pending file whose flock is held, and the
  kernel drops that flock when the writer dies, so its file is then claimed like any other.
* **A claimed file is worked on under its own non-blocking flock**: two flushers never
  deliver the same file, and a file left ``.flushing`` by a flusher that died is taken by
  the next flush. Delivery must be idempotent (the audit insert is ``ON CONFLICT DO
  NOTHING``), because a flusher may die between delivering and unlinking.
* **A line that is not a complete JSON object** (the torn tail of a killed writer, a damaged
  byte) or that the deliverer refuses for good is copied, byte for byte, to
  ``quarantine/<file>.lines`` (0600) and counted in ``rag_audit_spool_quarantined``; the
  rest of the file is delivered. Nothing is dropped, nothing blocks the queue.

Files are created 0600 and folders 0700: the lines hold tenant ids and redacted questions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag_core.common.metrics import AUDIT_SPOOL_QUARANTINED
from rag_core.common.processes import file_lock, fsync_folder

__all__ = ["Deliver", "JsonlSpool", "Refusal", "SpoolFlush", "encode_lines", "write_all"]

_log = logging.getLogger(__name__)

_CLAIMED = ".flushing"
_FILE_MODE = 0o600
_FOLDER_MODE = 0o700

#: A line the deliverer will never accept: its position in the list it was given, and why.
Refusal = tuple[int, str]
#: Writes the objects somewhere durable; returns the refusals. Raising means "try again
#: later": the file is kept, whole, for the next flush.
Deliver = Callable[[list[dict[str, Any]]], list[Refusal]]


@dataclass(frozen=True)
class SpoolFlush:
    """What one flush did: lines delivered, lines quarantined, lines still waiting (in files
    written meanwhile, held by another flusher, or kept because delivery failed)."""

    flushed: int
    quarantined: int
    waiting: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class JsonlSpool:
    """JSON-lines files named ``<name>-<pid>.jsonl`` in ``folder`` (see the module notes)."""

    def __init__(self, folder: Path, name: str = "audit") -> None:
        self.folder = folder
        self.name = name
        self.quarantine_dir = folder / "quarantine"
        self._lock = folder / ".lock"

    # --- writing ---------------------------------------------------------------------------
    def append(self, objects: Sequence[dict[str, Any]]) -> None:
        """Append one line per object; returns once they are on disk (fsynced)."""
        if not objects:
            return
        payload = encode_lines(objects)
        self._prepare()
        path = self.folder / f"{self.name}-{os.getpid()}.jsonl"
        with file_lock(self._lock):
            created, fd = _open_for_append(path)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    payload = b"\n" + payload  # end a torn line before ours begins
                write_all(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_folder(self.folder)

    # --- a buffered writer's own segment ---------------------------------------------------
    def segment_path(self, tag: str) -> Path:
        """The pending file of one writer (``<name>-<tag>.jsonl``: flushed like any other)."""
        return self.folder / f"{self.name}-{tag}.jsonl"

    def open_segment(self, path: Path) -> int:
        """An ``O_APPEND`` descriptor on the pending file ``path``, holding an exclusive
        flock on it until it is closed: claims leave the file to its writer while it lives.
        Taken under the folder lock, so no claim sees the file created but not yet locked.
        The caller fsyncs the folder (the new name) when it syncs the file."""
        self._prepare()
        with file_lock(self._lock):
            _, fd = _open_for_append(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    write_all(fd, b"\n")  # end a torn line before the writer's first
            except BaseException:
                os.close(fd)
                raise
        return fd

    def claim_segment(self, path: Path) -> Path:
        """Rename a writer's own pending file to a claimed name, as a claim does: the
        writer's next line starts a new file, this one is delivered and unlinked."""
        with file_lock(self._lock):
            claimed = _claimed_name(path)
            os.rename(path, claimed)
        return claimed

    def claimed_from(self, path: Path) -> list[Path]:
        """The claimed files that were the pending file ``path`` (in name order)."""
        return sorted(self.folder.glob(f"{path.stem}.*{_CLAIMED}"))

    def drain_file(self, path: Path, deliver: Deliver) -> tuple[int, int] | None:
        """Deliver one claimed file as :meth:`drain` does: (delivered, quarantined), or
        None when another flusher has it (or has just finished it)."""
        return self._drain_file(path, deliver)

    # --- reading ---------------------------------------------------------------------------
    def waiting(self) -> int:
        """Lines in the spool, claimed or not (a torn tail counts as one)."""
        if not self.folder.is_dir():
            return 0
        total = 0
        for path in [*self._pending(), *self._claimed()]:
            with contextlib.suppress(FileNotFoundError):
                total += sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
        return total

    def drain(self, deliver: Deliver) -> SpoolFlush:
        """Claim every file, deliver its lines, quarantine what cannot be delivered, unlink.

        Stops at the first delivery that raises (the database is away, say) and re-raises;
        that file and the ones not reached yet stay for the next flush.
        """
        if not self.folder.is_dir():
            return SpoolFlush(0, 0, 0)
        self._claim_pending()
        flushed = quarantined = 0
        for path in self._claimed():
            outcome = self._drain_file(path, deliver)
            if outcome is not None:
                flushed += outcome[0]
                quarantined += outcome[1]
        return SpoolFlush(flushed, quarantined, self.waiting())

    # --- internals -------------------------------------------------------------------------
    def _pending(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.name}-*.jsonl"))

    def _claimed(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.name}-*{_CLAIMED}"))

    def _prepare(self) -> None:
        self._ensure_folder(self.folder)
        # file_lock would create the lock file with the umask's mode: make it 0600 first.
        os.close(os.open(self._lock, os.O_WRONLY | os.O_CREAT, _FILE_MODE))

    def _claim_pending(self) -> None:
        self._prepare()
        with file_lock(self._lock):
            pending = [path for path in self._pending() if not _held_by_its_writer(path)]
            for path in pending:
                os.rename(path, _claimed_name(path))
            if pending:
                fsync_folder(self.folder)

    def _drain_file(self, path: Path, deliver: Deliver) -> tuple[int, int] | None:
        """(delivered, quarantined) for one claimed file, or None when another flusher has
        it (or finished it a moment ago)."""
        with _exclusively(path) as handle:
            if handle is None:
                return None
            lines = [line for line in handle.read().split(b"\n") if line.strip()]
            parsed: list[tuple[bytes, dict[str, Any]]] = []
            bad: list[tuple[bytes, str]] = []
            for line in lines:
                obj, problem = _parse(line)
                if obj is None:
                    bad.append((line, problem))
                else:
                    parsed.append((line, obj))
            refusals = deliver([obj for _, obj in parsed]) if parsed else []
            bad.extend((parsed[index][0], reason) for index, reason in refusals)
            if bad:
                self._quarantine(path.name, bad)
            path.unlink()
            fsync_folder(self.folder)
            return len(parsed) - len(refusals), len(bad)

    def _quarantine(self, source: str, bad: list[tuple[bytes, str]]) -> None:
        # Named after the claimed file and written whole (atomic replace): a flusher that dies
        # before the unlink and a later one that quarantines the same lines again leave one
        # copy, not two.
        self._ensure_folder(self.quarantine_dir)
        target = self.quarantine_dir / f"{source}.lines"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            write_all(fd, b"".join(line + b"\n" for line, _ in bad))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_folder(self.quarantine_dir)
        AUDIT_SPOOL_QUARANTINED.inc(len(bad))
        reasons = sorted({reason for _, reason in bad})
        _log.warning("audit spool: %d line(s) of %s quarantined in %s (%s)", len(bad), source,
                     target, "; ".join(reasons)[:500])

    @staticmethod
    def _ensure_folder(folder: Path) -> None:
        folder.mkdir(mode=_FOLDER_MODE, parents=True, exist_ok=True)
        if folder.stat().st_mode & 0o077:
            folder.chmod(_FOLDER_MODE)  # made by an older version or a wide umask: tighten


def encode_lines(objects: Sequence[dict[str, Any]]) -> bytes:
    """One compact JSON line per object (ASCII, so a line's bytes never hold a newline)."""
    return b"".join(json.dumps(o, separators=(",", ":")).encode("ascii") + b"\n"
                    for o in objects)


def _claimed_name(path: Path) -> Path:
    return path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}{_CLAIMED}")


def _held_by_its_writer(path: Path) -> bool:
    """True if a live buffered writer holds ``path`` (or it is gone): not to be claimed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock taken for the test
    return False


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return None, "not a complete JSON line (a torn write?)"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    return obj, ""


@contextlib.contextmanager
def _exclusively(path: Path) -> Iterator[Any]:
    """The open file under a non-blocking flock, or None if another process holds it, or
    if the name no longer points at the file we locked (finished and unlinked meanwhile)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        yield handle if same else None


def _open_for_append(path: Path) -> tuple[bool, int]:
    """(created, fd): created tells the caller to fsync the folder (the new name)."""
    try:
        return True, os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        return False, os.open(path, os.O_RDWR | os.O_APPEND)


def write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]
