"""Process helpers shared by the embedded PostgreSQL and Redis lifecycles.

Written here rather than taken from a library because the needs are three small, exact
things: an inter-process lock that is released when its holder dies (``fcntl.flock``), a free
loopback port, and "is this pid really our server" so that a stale pid file left by a crash
(whose pid may since belong to another process) is recognised and ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil


@dataclass(frozen=True)
class ServerStatus:
    """Whether an embedded server (PostgreSQL or Redis) runs, and where."""

    running: bool
    pid: int | None
    port: int | None
    data_dir: Path

    def as_dict(self) -> dict[str, Any]:
        return {"running": self.running, "pid": self.pid, "port": self.port,
                "data_dir": str(self.data_dir)}


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the block (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None, host: str = "127.0.0.1") -> int:
    """``preferred`` if it is free, otherwise a port the kernel hands out."""
    if preferred is not None and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def process_matches(pid: int, *needles: str) -> bool:
    """True when ``pid`` is alive and its command line contains every needle."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return all(needle in cmdline for needle in needles)


def read_int(path: Path) -> int | None:
    """The integer stored in ``path``, or None if the file is missing or garbled."""
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def fsync_folder(folder: Path) -> None:
    """Make a created, renamed or removed name in ``folder`` durable (a file's own fsync
    does not cover its directory entry)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EmbeddedServer:
    """What the embedded PostgreSQL and Redis share: a folder under the state folder with a
    port file, a log and a lock file, and a start/stop that hold the lock, so concurrent
    callers (several CLI processes, test workers) start one server and agree on it."""

    folder: ClassVar[str]
    log_name: ClassVar[str]

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / self.folder
        self._port_file = self.root / "port"
        self._log_file = self.root / self.log_name
        self._lock_file = self.root / ".lock"

    def start(self) -> ServerStatus:
        """Start the server unless it runs (idempotent, safe under concurrent starts)."""
        with file_lock(self._lock_file):
            current = self.status()
            return current if current.running else self._launch()

    def stop(self) -> ServerStatus:
        """Stop the server if it runs (data is kept)."""
        with file_lock(self._lock_file):
            current = self.status()
            if current.running:
                self._halt(current)
            return self.status()

    def status(self) -> ServerStatus:
        raise NotImplementedError

    def _launch(self) -> ServerStatus:
        raise NotImplementedError

    def _halt(self, current: ServerStatus) -> None:
        raise NotImplementedError
