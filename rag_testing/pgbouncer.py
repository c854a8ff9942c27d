"""A real PgBouncer in front of a PostgreSQL server, for tests of the platform behind a pooler.

Managed PostgreSQL is usually reached through a transaction-mode pooler (Supabase's pooler,
PgBouncer): consecutive transactions of one client connection may run on different server
connections, and one server connection serves many clients in turn. Nothing a client leaves
in the *session* (a ``SET``, a prepared statement, a temporary table) can be relied on in its
next transaction. :class:`PgBouncer` runs Debian's ``pgbouncer`` binary in that mode so the
suite can prove the platform does not depend on any of it.

PgBouncer refuses to run as root, so under uid 0 it runs as the embedded PostgreSQL's server
user (``embedded_postgres``, created by ``rag_core.db.embedded``), through ``setpriv``; its
folder (configuration, auth file, log) belongs to that user. ``setpriv --pdeathsig`` ends the
pooler when the process that started it dies, so an interrupted test run leaves none behind.

Authentication is ``scram-sha-256`` against a userlist holding the given roles' passwords in
clear (a test folder, mode 0600): PgBouncer needs the password itself to log in to the server
with SCRAM on the client's behalf.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from psycopg.conninfo import make_conninfo

from rag_core.common.processes import pick_port
from rag_core.errors import EmbeddedServerError

__all__ = ["PGBOUNCER_BINARY", "PgBouncer", "pgbouncer_version"]

PGBOUNCER_BINARY = Path("/usr/sbin/pgbouncer")
_SERVER_USER = "embedded_postgres"  # the embedded PostgreSQL's OS user (rag_core.db.embedded)
_START_ATTEMPTS = 3
_READY_TIMEOUT_S = 15.0
# PgBouncer tracks protocol-level prepared statements from 1.21 on (max_prepared_statements).
_TRACKS_PREPARED_STATEMENTS = (1, 21, 0)

_CONFIG = """\
[databases]
{alias} = host={upstream_host} port={upstream_port} dbname={dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {auth_file}
pool_mode = {pool_mode}
default_pool_size = {default_pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {max_client_conn}
logfile = {log_file}
pidfile = {pid_file}
{extra}"""


def pgbouncer_version(binary: Path = PGBOUNCER_BINARY) -> tuple[int, int, int]:
    """The version of ``binary`` (``pgbouncer --version``: "PgBouncer 1.18.0")."""
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                            check=False, timeout=30)
    found = re.search(r"PgBouncer (\d+)\.(\d+)\.(\d+)", result.stdout)
    if result.returncode != 0 or found is None:
        raise EmbeddedServerError("PgBouncer", str(binary),
                                  f"no version from --version: {result.stdout!r} "
                                  f"{result.stderr!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return (major, minor, patch)


def _quote(value: str) -> str:
    """A userlist field: double quotes, a quote inside doubled."""
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One PgBouncer process exposing database ``dbname`` of ``upstream`` as ``alias``.

    ``users`` maps each role that may connect to its password (the same on both sides).
    ``default_pool_size`` is the number of server connections per (database, user): keep it
    below the client pool's size so clients' transactions interleave on shared server
    connections. ``max_prepared_statements`` is written only for a PgBouncer that knows it
    (1.21 and later; 0 turns its prepared-statement tracking off); older ones track none.
    """

    def __init__(self, root: Path, *, upstream_port: int, dbname: str,
                 users: Mapping[str, str], upstream_host: str = "127.0.0.1",
                 alias: str | None = None, pool_mode: str = "transaction",
                 default_pool_size: int = 2, max_client_conn: int = 100,
                 max_prepared_statements: int = 0,
                 ignore_startup_parameters: tuple[str, ...] = (),
                 binary: Path = PGBOUNCER_BINARY) -> None:
        if not binary.is_file():
            raise EmbeddedServerError("PgBouncer", str(binary),
                                      "not installed (scripts/system-packages.sh installs "
                                      "Debian's pgbouncer package)")
        self.root = root
        self.binary = binary
        self.version = pgbouncer_version(binary)
        self.alias = alias or dbname
        self.port: int | None = None
        self._upstream = (upstream_host, upstream_port, dbname)
        self._users = dict(users)
        self._pool = (pool_mode, default_pool_size, max_client_conn)
        if max_prepared_statements and self.version < _TRACKS_PREPARED_STATEMENTS:
            raise EmbeddedServerError(
                "PgBouncer", str(binary),
                f"max_prepared_statements={max_prepared_statements} needs PgBouncer 1.21 or "
                f"later; this is {'.'.join(map(str, self.version))}")
        self._max_prepared_statements = max_prepared_statements
        self._ignore_startup_parameters = ignore_startup_parameters
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def tracks_prepared_statements(self) -> bool:
        """Whether this PgBouncer maps clients' prepared statements onto server connections
        (only 1.21+ with max_prepared_statements > 0 does)."""
        return self._max_prepared_statements > 0

    @property
    def log_file(self) -> Path:
        return self.root / "pgbouncer.log"

    def url(self, user: str, password: str) -> str:
        """A connection string to ``alias`` through the pooler as ``user``."""
        if self.port is None:
            raise EmbeddedServerError("PgBouncer", str(self.root), "not started")
        return make_conninfo("", host="127.0.0.1", port=self.port, dbname=self.alias,
                             user=user, password=password)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> PgBouncer:
        """Write the configuration and start the pooler; returns once it accepts TCP."""
        if self._process is not None:
            return self
        self._prepare_folder()
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            port = pick_port(None)
            self._write_config(port)
            self._process = subprocess.Popen(
                [*self._runner(), str(self.binary), str(self.root / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=self.root)
            if self._wait_ready(port):
                self.port = port
                return self
            # A port taken between pick and bind, most likely: try another one.
            last_error = self._log_tail()
            self._terminate()
        raise EmbeddedServerError("PgBouncer", str(self.root), f"start failed: {last_error}")

    def stop(self) -> None:
        """Stop the pooler (clients are disconnected) and remove its folder."""
        self._terminate()
        self.port = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- internals -----------------------------------------------------------------------
    def _server_user(self) -> pwd.struct_passwd | None:
        """The OS user to run as: none unless we are root (PgBouncer refuses root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(_SERVER_USER)
        except KeyError as exc:
            raise EmbeddedServerError(
                "PgBouncer", str(self.root),
                f"running as root needs the OS user {_SERVER_USER!r} (created when the "
                "embedded PostgreSQL starts)") from exc

    def _runner(self) -> list[str]:
        setpriv = shutil.which("setpriv")
        user = self._server_user()
        if setpriv is None:
            if user is not None:
                raise EmbeddedServerError("PgBouncer", str(self.root),
                                          "setpriv (util-linux) is needed to run it as "
                                          f"{_SERVER_USER!r} under root")
            return []
        command = [setpriv, "--pdeathsig", "TERM"]
        if user is not None:
            # The user's own group and no supplementary ones: never root's group.
            command += ["--reuid", str(user.pw_uid), "--regid", str(user.pw_gid),
                        "--clear-groups"]
        return [*command, "--"]

    def _prepare_folder(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        user = self._server_user()
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _write_private(self, name: str, text: str) -> Path:
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        return path

    def _write_config(self, port: int) -> None:
        auth_file = self._write_private(
            "userlist.txt", "".join(f"{_quote(user)} {_quote(password)}\n"
                                    for user, password in self._users.items()))
        extra = []
        if self.version >= _TRACKS_PREPARED_STATEMENTS:
            extra.append(f"max_prepared_statements = {self._max_prepared_statements}")
        if self._ignore_startup_parameters:
            extra.append("ignore_startup_parameters = "
                         + ", ".join(self._ignore_startup_parameters))
        host, upstream_port, dbname = self._upstream
        pool_mode, default_pool_size, max_client_conn = self._pool
        self._write_private("pgbouncer.ini", _CONFIG.format(
            alias=self.alias, upstream_host=host, upstream_port=upstream_port, dbname=dbname,
            port=port, auth_file=auth_file, pool_mode=pool_mode,
            default_pool_size=default_pool_size, max_client_conn=max_client_conn,
            log_file=self.log_file, pid_file=self.root / "pgbouncer.pid",
            extra="".join(line + "\n" for line in extra)))

    def _wait_ready(self, port: int) -> bool:
        """Until the pooler accepts a TCP connection (True) or exits (False)."""
        assert self._process is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # SIGTERM: immediate shutdown
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
