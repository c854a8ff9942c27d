"""Embedded PostgreSQL and Redis lifecycles on their own state folders: idempotent,
concurrent-safe, data kept across restarts, recovering from a crash's stale pid file."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from rag_core.db.embedded import EmbeddedPostgres, shared_buffers_mb
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture()
def state_dir() -> Iterator[Path]:
    # Under the repo's .rag, not /tmp: the server's OS user must traverse the parents.
    root = REPO_ROOT / ".rag" / "test-lifecycle"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start_in_child(state_dir: str, queue: multiprocessing.Queue[int | None]) -> None:
    status = EmbeddedPostgres(Path(state_dir)).start()
    queue.put(status.pid)


def test_postgres_start_twice_stop_twice_and_data_survives_restart(state_dir: Path) -> None:
    server = EmbeddedPostgres(state_dir)
    try:
        first = server.start()
        again = server.start()
        assert first.running and again.pid == first.pid and again.port == first.port
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        assert not server.stop().running
        assert not server.stop().running  # idempotent
        restarted = server.start()
        assert restarted.running
        with psycopg.connect(server.admin_url()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("still here",)
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            assert version is not None and tuple(map(int, version[0].split("."))) >= (0, 8, 0)
            # a quarter of this machine's memory, within 256 MB .. 4 GB
            shown = conn.execute("SELECT setting::bigint * 8 / 1024 FROM pg_settings "
                                 "WHERE name = 'shared_buffers'").fetchone()
            assert shown == (shared_buffers_mb(),)
    finally:
        server.stop()


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    assert shared_buffers_mb(16 * 2**30) == 4096
    assert shared_buffers_mb(8 * 2**30) == 2048
    assert shared_buffers_mb(512 * 2**20) == 256
    assert shared_buffers_mb(256 * 2**30) == 4096


def test_postgres_concurrent_starts_yield_one_server(state_dir: Path) -> None:
    server = EmbeddedPostgres(state_dir)
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int | None] = ctx.Queue()
    children = [ctx.Process(target=_start_in_child, args=(str(state_dir), queue))
                for _ in range(3)]
    try:
        for child in children:
            child.start()
        for child in children:
            child.join(120)
            assert child.exitcode == 0
        pids = {queue.get(timeout=5) for _ in children}
        assert len(pids) == 1
        assert server.status().pid in pids
    finally:
        server.stop()


def test_postgres_recovers_from_a_crash_and_a_stale_pid_file(state_dir: Path) -> None:
    server = EmbeddedPostgres(state_dir)
    try:
        status = server.start()
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE survived (v int)")
            conn.execute("INSERT INTO survived VALUES (42)")
        assert status.pid is not None
        postmaster = psutil.Process(status.pid)
        children = postmaster.children(recursive=True)
        os.kill(status.pid, signal.SIGKILL)  # crash: postmaster.pid is left behind
        psutil.wait_procs([postmaster, *children], timeout=30)
        assert (state_dir / "pg" / "data" / "postmaster.pid").exists()
        assert not server.status().running
        restarted = server.start()
        assert restarted.running and restarted.pid != status.pid
        with psycopg.connect(server.admin_url()) as conn:
            assert conn.execute("SELECT v FROM survived").fetchone() == (42,)
    finally:
        server.stop()


def test_postgres_pid_file_naming_an_unrelated_live_process_is_ignored(state_dir: Path) -> None:
    server = EmbeddedPostgres(state_dir)
    try:
        server.start()
        server.stop()
        pid_file = state_dir / "pg" / "data" / "postmaster.pid"
        # A stale file whose pid now belongs to some other live process (this test's).
        pid_file.write_text(f"{os.getpid()}\n{state_dir}\n0\n5432\n\n127.0.0.1\n0 0\nready\n")
        assert not server.status().running
        assert server.start().running
    finally:
        server.stop()


def test_postgres_moves_to_a_free_port_when_its_port_is_taken(state_dir: Path) -> None:
    server = EmbeddedPostgres(state_dir)
    try:
        port = server.start().port
        server.stop()
        assert port is not None
        with socket.socket() as blocker:
            blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            moved = server.start()
            assert moved.running and moved.port != port
    finally:
        server.stop()


def test_redis_lifecycle_and_stale_pid(state_dir: Path) -> None:
    server = EmbeddedRedis(state_dir)
    try:
        first = server.start()
        assert server.start().pid == first.pid
        client = redis.Redis.from_url(server.url(), socket_timeout=2)
        assert client.ping()
        assert client.eval("return ARGV[1]", 0, "lua-ok") == b"lua-ok"
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(first.pid).wait(10)
        assert not server.status().running
        second = server.start()
        assert second.running and second.pid != first.pid
        assert redis.Redis.from_url(server.url(), socket_timeout=2).ping()
    finally:
        assert not server.stop().running


def test_postgres_starts_in_a_project_under_a_private_parent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As root the server runs as its own OS user: a project inside a 0700 folder (root's
    home, say) must still work, and every permission changed outside the project is said."""
    private = tmp_path / "home"
    private.mkdir()
    private.chmod(0o700)
    state = private / "project" / ".rag"
    state.mkdir(parents=True)
    server = EmbeddedPostgres(state)
    with caplog.at_level(logging.WARNING, logger="rag_core.db.embedded"):
        status = server.start()
    try:
        assert status.running
        with psycopg.connect(server.admin_url(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        if os.geteuid() == 0:
            # search only (o+x), never read, and named in a warning
            assert stat.S_IMODE(private.stat().st_mode) == 0o701
            assert any(str(private) in record.getMessage() and "o+x" in record.getMessage()
                       for record in caplog.records)
    finally:
        server.stop()
