"""Migrations: up, down, up again; checksums; concurrent runners; malformed folders."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from rag_core import services
from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.connection import resolve_targets
from rag_core.errors import MigrationChecksumError, MigrationError

EXPECTED_TABLES = {"tenants", "documents", "chunks", "chunk_embeddings", "embedding_models",
                   "ingestion_jobs", "audit_log", "feature_flags", "feature_flag_events"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'rag'").fetchall()
    return {r[0] for r in rows}


def test_up_down_up(create_database: Callable[[str], Settings]) -> None:
    settings = create_database("mig")
    url = resolve_targets(settings).admin_url
    all_versions = [m.version for m in migrations.discover(settings.migrations_dir)]

    assert services.upgrade_database(settings).applied == all_versions
    assert _tables(url) >= EXPECTED_TABLES
    assert services.upgrade_database(settings).applied == []  # idempotent

    assert services.downgrade_database(settings, 0) == list(reversed(all_versions))
    assert _tables(url) == set()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM rag_meta.schema_migrations").fetchone() == (0,)

    assert services.upgrade_database(settings).applied == all_versions
    assert _tables(url) >= EXPECTED_TABLES
    with psycopg.connect(url) as conn:
        states = migrations.status(conn, settings.migrations_dir)
    assert all(s.applied and s.checksum_ok for s in states)


def test_every_migration_has_a_working_rollback(create_database: Callable[[str], Settings]) -> None:
    settings = create_database("rollback")
    for migration in migrations.discover(settings.migrations_dir):
        services.upgrade_database(settings, target=migration.version)
        services.downgrade_database(settings, migration.version - 1)
        services.upgrade_database(settings, target=migration.version)


def test_edited_applied_migration_is_refused(create_database: Callable[[str], Settings],
                                             tmp_path: Path) -> None:
    settings = create_database("edit")
    folder = tmp_path / "sql"
    shutil.copytree(settings.migrations_dir, folder)
    edited = settings.model_copy(update={"migrations_dir": folder})
    services.upgrade_database(edited)
    first = sorted(folder.glob("0001_*.up.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationChecksumError) as info:
        services.upgrade_database(edited)
    assert info.value.version == 1
    with pytest.raises(MigrationChecksumError):
        services.downgrade_database(edited, 0)
    # Nothing was changed by the refused runs.
    assert _tables(resolve_targets(edited).admin_url) >= EXPECTED_TABLES


def test_missing_rollback_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "0001_only_up.up.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="missing its down file"):
        migrations.discover(tmp_path)


def test_badly_named_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="unexpected file name"):
        migrations.discover(tmp_path)


def test_failed_migration_leaves_nothing_behind(create_database: Callable[[str], Settings],
                                                tmp_path: Path) -> None:
    settings = create_database("fail")
    folder = tmp_path / "sql"
    shutil.copytree(settings.migrations_dir, folder)
    (folder / "0999_broken.up.sql").write_text(
        "CREATE TABLE rag.half_done (id int);\nSELECT no_such_function();\n")
    (folder / "0999_broken.down.sql").write_text("DROP TABLE rag.half_done;\n")
    broken = settings.model_copy(update={"migrations_dir": folder})
    with pytest.raises(MigrationError) as info:
        services.upgrade_database(broken)
    assert info.value.version == 999
    tables = _tables(resolve_targets(broken).admin_url)
    assert "half_done" not in tables
    assert tables >= EXPECTED_TABLES  # earlier migrations stay applied


def test_concurrent_upgrades_apply_each_migration_once(
        create_database: Callable[[str], Settings]) -> None:
    settings = create_database("conc")
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(services.upgrade_database(settings).applied)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in migrations.discover(settings.migrations_dir)]
