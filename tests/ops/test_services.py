"""Bringing the backing services up: the application role's password never travels (or is
logged) in plain text."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.ops import services
from tests.conftest import TEST_STATE_DIR


def test_the_app_role_password_is_sent_as_a_scram_verifier(
        create_database: Callable[[str], Settings]) -> None:
    fresh = create_database("pw")
    services.upgrade_database(fresh)
    targets = resolve_targets(fresh)
    assert targets.app_password
    log = TEST_STATE_DIR / "pg" / "server.log"
    start = log.stat().st_size
    with psycopg.connect(targets.admin_url, autocommit=True) as conn:
        conn.execute("SET log_statement = 'all'")  # what an audited server logs, and more
        services.set_app_role_password(conn, targets)
    with log.open("rb") as handle:
        handle.seek(start)
        logged = handle.read().decode(errors="replace")
    assert "ALTER ROLE" in logged and "SCRAM-SHA-256$4096:" in logged
    assert targets.app_password not in logged
    # the role still logs in with its password
    with services.open_database(fresh) as db, db.unscoped_session() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (targets.app_role,)
