"""``rag serve`` as a child process: the service exactly as an operator runs it (uvicorn's
supervisor and its worker processes), for the fault tests and ``rag bench load``.

:class:`ServeProcess` starts ``rag serve --workers N --port P`` from this interpreter's
environment in a process group of its own (so stopping it reaches every worker, and a
Ctrl-C in the caller's terminal does not), waits a bounded time for ``/healthz``, tells the
worker processes apart from uvicorn's supervisor (``worker_pids``), and stops the whole
group: SIGINT (uvicorn's graceful shutdown: workers finish their requests, flush their audit
writers), then SIGKILL to whatever is left once the grace period is over.

The child's output goes to a log file in a folder of its own; the start-up error quotes its
tail, and the folder is removed after a clean stop (kept when the service failed to start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from rag_core.errors import EmbeddedServerError
from rag_testing.api_server import free_port

__all__ = ["ServeProcess", "rag_command"]

#: How many characters of the child's log an error quotes.
_LOG_TAIL_CHARS = 2000


def rag_command() -> list[str]:
    """The ``rag`` entry point of this interpreter's environment (its script, else
    ``python -m rag_core.cli``)."""
    script = Path(sys.executable).with_name("rag")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "rag_core.cli"]


class ServeProcess:
    """``with ServeProcess(env, workers=2) as service: httpx.get(service.url + "/healthz")``.

    ``env`` is the child's whole environment (the caller decides what it inherits: see
    ``tests.conftest.cli_environment``); the service reads its settings from it as
    ``rag serve`` always does.
    """

    def __init__(self, env: Mapping[str, str], *, workers: int = 2, port: int | None = None,
                 host: str = "127.0.0.1", startup_timeout_s: float = 180.0,
                 stop_timeout_s: float = 30.0, cwd: Path | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.env = dict(env)
        self.workers = workers
        self.host = host
        self.port = port if port is not None else free_port()
        self.url = f"http://{host}:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.cwd = cwd
        self.extra_args = list(extra_args)
        self.log_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # --- lifetime --------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The supervisor's pid (``rag serve`` itself)."""
        if self._proc is None:
            raise EmbeddedServerError("HTTP service", self.url, "rag serve was not started")
        return self._proc.pid

    @property
    def log_path(self) -> Path | None:
        return self.log_dir / "serve.log" if self.log_dir is not None else None

    def start(self) -> ServeProcess:
        """Start the child and wait until every worker answers ``/healthz``."""
        self.log_dir = Path(tempfile.mkdtemp(prefix="rag-serve-"))
        args = [*rag_command(), "serve", "--host", self.host, "--port", str(self.port),
                "--workers", str(self.workers), *self.extra_args]
        with (self.log_dir / "serve.log").open("wb") as log:
            # Its own session, hence its own process group: stop() signals the group, and
            # the caller's terminal signals never reach it.
            self._proc = subprocess.Popen(args, env=self.env, cwd=self.cwd,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_serving(self.workers, timeout_s=self.startup_timeout_s)
        except BaseException:
            self._stop_group(keep_log=True)
            raise
        return self

    def stop(self) -> int | None:
        """Stop the service (graceful, then killed); its supervisor's exit code."""
        return self._stop_group(keep_log=False)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop_group(keep_log=exc is not None)

    # --- observing it ----------------------------------------------------------------------
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes serving requests right now (uvicorn's spawned
        children; one worker runs inside the supervisor itself)."""
        if not self.running():
            return []
        try:
            parent = psutil.Process(self.pid)
            if self.workers == 1:
                return [parent.pid]
            pids = []
            for child in parent.children():
                with contextlib.suppress(psutil.Error):
                    # multiprocessing's spawned workers, not its resource tracker
                    if any("spawn_main" in part for part in child.cmdline()):
                        pids.append(child.pid)
            return sorted(pids)
        except psutil.NoSuchProcess:
            return []

    def health_pid(self, timeout_s: float = 2.0) -> int | None:
        """The pid of the worker that answered one ``/healthz`` on a fresh connection, or
        None when none answered."""
        try:
            response = httpx.get(f"{self.url}/healthz", timeout=timeout_s)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return int(response.json()["pid"])

    def wait_serving(self, workers: int = 1, *, timeout_s: float = 120.0) -> set[int]:
        """Wait until ``workers`` distinct worker processes have answered ``/healthz``
        (each request on a new connection, which any ready worker may accept); their pids.
        Raises (quoting the log) when the child exits or the deadline passes first."""
        deadline = time.monotonic() + timeout_s
        seen: set[int] = set()
        while True:
            if not self.running():
                raise EmbeddedServerError(
                    "HTTP service", self.url,
                    f"rag serve exited with code {self._exit_code()} during start-up; "
                    f"log: {self.log_tail()}")
            pid = self.health_pid()
            live = set(self.worker_pids())
            if pid is not None and pid in live:
                seen.add(pid)
            seen &= live  # a worker that died meanwhile no longer counts
            if len(seen) >= workers:
                return seen
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    "HTTP service", self.url,
                    f"{len(seen)} of {workers} workers answered /healthz within "
                    f"{timeout_s} s; log: {self.log_tail()}")
            time.sleep(0.05 if pid is not None else 0.2)

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        data = path.read_bytes()[-chars:]
        return data.decode("utf-8", "replace").strip() or "(empty)"

    # --- internals -------------------------------------------------------------------------
    def _exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def _stop_group(self, *, keep_log: bool) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # uvicorn: graceful shutdown of every worker
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        # Whatever is left of the group (a worker orphaned by a killed supervisor) is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        if not keep_log and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None
        self._proc = None
        return code
