"""The embedded Redis servers: a password that is required and kept 0600, an older
passwordless server adopted, caches that may be evicted and controls that may not; and
`rag doctor` warning when the controls run under an evicting policy."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import pytest
import redis

from rag_core.common.processes import pick_port
from rag_core.config import Settings
from rag_core.errors import ConfigurationError
from rag_core.ops.doctor import run_doctor
from rag_core.redis.embedded import EmbeddedRedis, _server_binary
from rag_core.redis.urls import control_url
from tests.conftest import make_settings


@pytest.fixture()
def own_redis(tmp_path: Path) -> EmbeddedRedis:
    return EmbeddedRedis(tmp_path / "state")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_password_is_required_and_kept_0600(own_redis: EmbeddedRedis) -> None:
    try:
        own_redis.start()
        for url in (own_redis.url(), own_redis.control_url()):
            assert redis.Redis.from_url(url, socket_timeout=2).ping()
            anonymous = redis.Redis(host="127.0.0.1", port=_port(url), socket_timeout=2)
            with pytest.raises(redis.AuthenticationError):
                anonymous.get("anything")
        credentials = own_redis.root / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        password = redis.Redis.from_url(own_redis.url()).connection_pool.connection_kwargs[
            "password"]
        assert password and password in credentials.read_text()
        # Handed over on stdin: no other user can read it from the process list.
        pid = own_redis.status().pid
        assert pid is not None
        assert password not in Path(f"/proc/{pid}/cmdline").read_text()
    finally:
        own_redis.stop()


def test_a_passwordless_server_started_earlier_is_adopted(own_redis: EmbeddedRedis) -> None:
    """An older version started the server without a password; it keeps running (and its
    data), gets the password and the eviction policy, and connections it had keep working."""
    root = own_redis.root
    root.mkdir(parents=True)
    port = 0
    try:
        port = pick_port(None)
        subprocess.run([str(_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--daemonize", "yes",
                        "--pidfile", str(root / "redis.pid"), "--dir", str(root),
                        "--logfile", str(root / "redis.log")], check=True, timeout=30)
        (root / "port").write_text(f"{port}\n")
        old = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                old.set("kept", "yes")
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        assert old.get("kept") == b"yes"
        pid = int((root / "redis.pid").read_text())

        status = own_redis.start()

        assert status.pid == pid  # adopted, not restarted
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).get("kept")
        assert old.get("kept") == b"yes"  # an open connection stays authenticated
        adopted = redis.Redis.from_url(own_redis.url(), socket_timeout=2)
        assert adopted.get("kept") == b"yes"
        assert adopted.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    finally:
        own_redis.stop()
        if port:
            assert not own_redis.status().running


def test_caches_may_be_evicted_controls_never(own_redis: EmbeddedRedis) -> None:
    try:
        own_redis.start()
        cache = redis.Redis.from_url(own_redis.url(), socket_timeout=2)
        control = redis.Redis.from_url(own_redis.control_url(), socket_timeout=2)
        assert cache.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert int(str(cache.config_get("maxmemory")["maxmemory"])) > 0
        assert control.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert _port(own_redis.url()) != _port(own_redis.control_url())
    finally:
        own_redis.stop()


def test_doctor_warns_when_the_controls_may_be_evicted(settings: Settings,
                                                       redis_server: EmbeddedRedis) -> None:
    embedded = {c.name: c for c in run_doctor(settings).checks}
    assert embedded["redis controls"].status == "ok"
    # Only REDIS_URL: the controls share the caches' server (allkeys-lru, maxmemory set).
    shared = make_settings(embedded_database=settings.embedded_database,
                           redis_url=redis_server.url())
    check = {c.name: c for c in run_doctor(shared).checks}["redis controls"]
    assert check.status == "warn"
    assert "allkeys-lru" in check.detail and "RAG_REDIS_CONTROL_URL" in check.detail
    separate = make_settings(embedded_database=settings.embedded_database,
                             redis_url=redis_server.url(),
                             redis_control_url=redis_server.control_url())
    assert {c.name: c for c in run_doctor(separate).checks}["redis controls"].status == "ok"


def test_controls_never_share_the_caches_database() -> None:
    shared = make_settings(redis_url="redis://127.0.0.1:6379/1", redis_control_db=1)
    with pytest.raises(ConfigurationError) as caught:
        control_url(shared)
    assert caught.value.value == 1
    assert control_url(make_settings(redis_url="redis://h:1/0")) == "redis://h:1/1"
