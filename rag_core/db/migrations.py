"""Versioned SQL migrations: ``sql/NNNN_name.up.sql`` with a rollback ``NNNN_name.down.sql``.

Each migration runs in its own transaction under an advisory lock (two runners never
interleave), and is recorded in ``rag_meta.schema_migrations`` with the sha256 of its up
file. A recorded migration whose file changed since is refused (``MigrationChecksumError``):
fixes go in a new migration. The ledger lives in its own schema so that rolling back the
first migration (which drops schema ``rag``) keeps the ledger intact.

Hand-written rather than Alembic/yoyo: the migrations are plain SQL files the DBA can read,
the whole runner is one small module, and neither tool records checksums this way without
more code than this.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from rag_core.errors import MigrationChecksumError, MigrationError

_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
_LOCK_KEY = 7_212_023_001  # arbitrary, constant: the advisory lock id of the migration runner

_LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS rag_meta;
CREATE TABLE IF NOT EXISTS rag_meta.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_path: Path
    down_path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied: bool
    checksum_ok: bool | None  # None when not applied


def discover(directory: Path) -> list[Migration]:
    """All migrations in ``directory``, in version order; each must have both files."""
    found: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(0, f"unexpected file name {path.name!r} in {directory}")
        version = int(match.group(1))
        if names.setdefault(version, match.group(2)) != match.group(2):
            raise MigrationError(version, f"two names for one version: {path.name!r}")
        found.setdefault(version, {})[match.group(3)] = path
    migrations = []
    for version in sorted(found):
        files = found[version]
        for direction in ("up", "down"):
            if direction not in files:
                raise MigrationError(version, f"missing its {direction} file")
        migrations.append(Migration(version, names[version], files["up"], files["down"]))
    return migrations


def lock(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Take the migration runner's transaction-scoped advisory lock."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    conn.execute(_LEDGER_DDL)
    rows = conn.execute("SELECT version, checksum FROM rag_meta.schema_migrations").fetchall()
    return {int(str(v)): str(c) for v, c in rows}


def status(conn: psycopg.Connection[tuple[object, ...]], directory: Path) -> list[MigrationState]:
    """Every known migration with whether it is applied and whether its file is unchanged.

    Read-only: a database that never saw a migration simply has none applied.
    """
    row = conn.execute("SELECT to_regclass('rag_meta.schema_migrations')").fetchone()
    applied: dict[int, str] = {}
    if row is not None and row[0] is not None:
        applied = {int(str(v)): str(c) for v, c in conn.execute(
            "SELECT version, checksum FROM rag_meta.schema_migrations").fetchall()}
    states = []
    for migration in discover(directory):
        recorded = applied.get(migration.version)
        states.append(MigrationState(
            migration.version, migration.name, recorded is not None,
            None if recorded is None else recorded == migration.checksum))
    return states


def verify_checksums(applied: dict[int, str], migrations: list[Migration]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, recorded in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(version, "is applied in the database but its files are missing")
        if migration.checksum != recorded:
            raise MigrationChecksumError(version, recorded, migration.checksum)


def upgrade(conn: psycopg.Connection[tuple[object, ...]], directory: Path,
            target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (all when None); return the versions applied."""
    migrations = discover(directory)
    done: list[int] = []
    for migration in migrations:
        if target is not None and migration.version > target:
            break
        with conn.transaction():
            lock(conn)
            applied = _applied(conn)
            verify_checksums(applied, migrations)
            if migration.version in applied:
                continue
            _run_script(conn, migration.version, migration.up_path)
            conn.execute(
                "INSERT INTO rag_meta.schema_migrations (version, name, checksum) "
                "VALUES (%s, %s, %s)", [migration.version, migration.name, migration.checksum])
        done.append(migration.version)
    return done


def downgrade(conn: psycopg.Connection[tuple[object, ...]], directory: Path,
              target: int) -> list[int]:
    """Roll back every applied migration above version ``target``, newest first."""
    if target < 0:
        raise MigrationError(target, "target version must be >= 0")
    migrations = discover(directory)
    done: list[int] = []
    for migration in reversed(migrations):
        if migration.version <= target:
            break
        with conn.transaction():
            lock(conn)
            applied = _applied(conn)
            verify_checksums(applied, migrations)
            if migration.version not in applied:
                continue
            _run_script(conn, migration.version, migration.down_path)
            conn.execute("DELETE FROM rag_meta.schema_migrations WHERE version = %s",
                         [migration.version])
        done.append(migration.version)
    return done


def _run_script(conn: psycopg.Connection[tuple[object, ...]], version: int, path: Path) -> None:
    try:
        # No parameters: psycopg sends the file as one simple-protocol query, so a script
        # with many statements (and '%' in format() strings) runs as written.
        conn.execute(path.read_text(encoding="utf-8").encode())
    except psycopg.Error as exc:
        raise MigrationError(version, f"{path.name} failed: {exc}") from exc
