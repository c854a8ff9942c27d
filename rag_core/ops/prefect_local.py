"""A private Prefect server and its workers as child processes, for ``rag prefect smoke``.

Not a process manager for production (run ``prefect server start`` and ``prefect worker
start`` under systemd, Kubernetes or the like): it exists so a smoke test can run the
deployments of ``prefect.yaml`` exactly as an operator does, on a server nobody else uses,
and leave nothing behind. Everything it starts gets a ``PREFECT_HOME`` in a temporary folder
(its own SQLite database, profiles and logs), a free loopback port, and no analytics.

Stopping follows what the processes answer to: a worker ignores SIGTERM while it polls and
takes a first SIGINT as "stop taking runs" (Prefect's handler turns a second one into a
SIGKILL); the server forwards SIGINT to its uvicorn child. So: SIGINT, a grace period, SIGINT
again, then SIGKILL to each process group and to every descendant ever seen (a worker starts
each flow run in a session of its own, out of reach of the worker's group).
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
from typing import Any

import httpx
import psutil
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from rag_core.common.processes import pick_port
from rag_core.errors import EmbeddedServerError

#: How many characters of a child's log an error quotes.
_LOG_TAIL_CHARS = 1500

# Set for every child: a private home, no telemetry, workers that look for runs every second
# (the default is 10 s), and no UI to build.
_PREFECT_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
}
# Answers Prefect's own client retries: 503 is the server's "a retryable database error"
# (SQLite busy under load, for one).
_RETRY_STATUS = frozenset({429, 502, 503})
# What a caller's shell may hold that would point a child at another Prefect.
_FOREIGN = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH",
            "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def prefect_command() -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment."""
    return [sys.executable, "-m", "prefect"]


class LocalPrefect:
    """``with LocalPrefect(env) as prefect: prefect.cli("work-pool", "create", ...)``.

    ``env`` is what every child inherits (the platform's settings travel in it: the flow
    runs read theirs from the environment), with the Prefect variables above on top.
    """

    def __init__(self, env: Mapping[str, str], *, startup_timeout_s: float = 180.0,
                 stop_grace_s: float = 15.0) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rag-prefect-"))
        self.port = pick_port(None)
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in env.items() if k not in _FOREIGN} | _PREFECT_ENV | {
            "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url,
            "PREFECT_PROFILES_PATH": str(self.home / "profiles.toml")}
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._seen: dict[int, psutil.Process] = {}

    # --- starting --------------------------------------------------------------------------
    def start(self) -> LocalPrefect:
        """Start the server and wait until its API answers."""
        # No scheduler and no event triggers: a deployment with an active schedule (the
        # audit-spool flush, the rebalance) or a trigger (analytics, after every completed
        # ingest) must not put runs of its own on this server's pool while the smoke measures.
        server = self._spawn("server", [*prefect_command(), "server", "start", "--host",
                                        "127.0.0.1", "--port", str(self.port),
                                        "--no-scheduler", "--no-ui"],
                             {"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"})
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._healthy():
            if server.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedServerError(
                    "Prefect server", str(self.home),
                    f"not serving {self.api_url} within {self.startup_timeout_s} s "
                    f"(exit code {server.poll()}); log: {self.log_tail('server')}")
            time.sleep(0.5)
        return self

    def cli(self, *args: str, cwd: Path | None = None, extra_env: Mapping[str, str] | None = None,
            timeout_s: float = 300.0) -> str:
        """Run ``prefect ARGS`` against this server; its output (raises when it fails)."""
        try:
            done = subprocess.run([*prefect_command(), *args], env=self.env | dict(extra_env or {}),
                                  cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServerError("Prefect server", str(self.home),
                                      f"prefect {' '.join(args)} took over {timeout_s} s") \
                from exc
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        if done.returncode != 0:
            raise EmbeddedServerError(
                "Prefect server", str(self.home),
                f"prefect {' '.join(args)} exited with {done.returncode}: "
                f"{output[-_LOG_TAIL_CHARS:].strip()}")
        return output

    def start_worker(self, pool: str, name: str, *, limit: int | None = None,
                     work_queues: Sequence[str] = (),
                     extra_env: Mapping[str, str] | None = None) -> int:
        """Start ``prefect worker start`` on ``pool`` as ``name``; its pid."""
        args = [*prefect_command(), "worker", "start", "--pool", pool, "--name", name]
        if limit is not None:
            args += ["--limit", str(limit)]
        for queue in work_queues:
            args += ["--work-queue", queue]
        return self._spawn(f"worker-{name}", args, extra_env).pid

    # --- observing -------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._request("POST", path, body)

    def track(self) -> None:
        """Remember every descendant alive now (flow runs leave their worker's group), so
        :meth:`stop` can still reach one whose worker died."""
        for _, proc in self._children:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    self._seen.setdefault(child.pid, child)

    def pids(self) -> list[int]:
        """The pids of the server, the workers and the descendants seen so far."""
        return sorted({proc.pid for _, proc in self._children} | set(self._seen))

    def log_tail(self, name: str) -> str:
        path = self.home / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return path.read_bytes()[-_LOG_TAIL_CHARS:].decode("utf-8", "replace").strip()

    # --- stopping --------------------------------------------------------------------------
    def stop(self, *, keep_home: bool = False) -> None:
        """Stop every child (workers first, the server last) and remove the home folder."""
        self.track()
        workers = [proc for name, proc in self._children if name != "server"]
        servers = [proc for name, proc in self._children if name == "server"]
        for group in (workers, servers):
            self._interrupt(group)
        for process in self._seen.values():  # flow runs that outlived their worker
            with contextlib.suppress(psutil.Error):
                process.kill()
        self._children.clear()
        self._seen.clear()
        if not keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalPrefect:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- internals -------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str],
               extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.home / f"{name}.log").open("ab") as log:
            # A session of its own: the caller's Ctrl-C does not reach it, stop() does.
            proc = subprocess.Popen(args, env=self.env | dict(extra_env or {}),
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._children.append((name, proc))
        return proc

    def _interrupt(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for attempt in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
            alive = [proc for proc in procs if proc.poll() is None]
            for proc in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if attempt == signal.SIGKILL:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.send_signal(attempt)
            deadline = time.monotonic() + self.stop_grace_s
            while any(proc.poll() is None for proc in alive) and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in procs:
            # Whatever is left of the group (the server's uvicorn child) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One API call, retried on the answers a retry can mend (a POST that creates
        something carries an idempotency key: see the caller)."""
        retrying = Retrying(retry=retry_if_exception(_transient), stop=stop_after_attempt(6),
                            wait=wait_exponential_jitter(initial=0.5, max=5), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    response = httpx.request(method, f"{self.api_url}{path}", json=body,
                                             timeout=30.0)
                    response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EmbeddedServerError("Prefect server", str(self.home),
                                      f"{method} {path}: {exc}") from exc
        return response.json() if response.content else None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in _RETRY_STATUS
    return isinstance(exc, httpx.TransportError)
