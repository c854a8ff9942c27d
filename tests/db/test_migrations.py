"""Migrations: up, down, up again; checksums; concurrent runners; malformed folders."""

from __future__ import annotations

import itertools
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.connection import resolve_targets
from rag_core.errors import MigrationChecksumError, MigrationError
from rag_core.ops import services

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


# --- catalog snapshots ------------------------------------------------------------------
# What a rollback must restore, read from pg_catalog: every object of the platform's schemas
# (``rag`` and the ledger's ``rag_meta``) with its definition, the schemas and extensions of
# the database, every grant to a role in it, and the row counts of the platform's tables
# (0001 registers an embedding model: data migrations must roll back too). Nothing that
# changes between two identical runs (OIDs, timestamps, attnums) is recorded.
SCOPE = ("rag", "rag_meta")
Catalog = dict[str, set[tuple[Any, ...]] | list[tuple[Any, ...]]]

_CATALOG_QUERIES: dict[str, str] = {
    "schemas": """
        SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace
         WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema'""",
    "extensions": """
        SELECT e.extname, e.extversion, n.nspname FROM pg_extension e
          JOIN pg_namespace n ON n.oid = e.extnamespace""",
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
               c.relforcerowsecurity, c.reloptions::text, c.relowner::regrole::text,
               c.relacl::text,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(scope)s) AND c.relkind NOT IN ('i', 'I')""",
    # Ordered by attnum, but the number itself is left out: a column dropped by a rollback
    # keeps its attnum, so a re-added one gets a new number in the same relative place.
    "columns": """
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               a.attcollation::regcollation::text, a.attacl::text
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = ANY(%(scope)s) AND c.relkind NOT IN ('i', 'I')
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY n.nspname, c.relname, a.attnum""",
    "constraints": """
        SELECT n.nspname, coalesce(c.relname, t.typname), k.conname, k.contype,
               pg_get_constraintdef(k.oid), k.convalidated, k.condeferrable
          FROM pg_constraint k
          JOIN pg_namespace n ON n.oid = k.connamespace
          LEFT JOIN pg_class c ON c.oid = k.conrelid
          LEFT JOIN pg_type t ON t.oid = k.contypid
         WHERE n.nspname = ANY(%(scope)s)""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = ANY(%(scope)s)""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual,
               with_check FROM pg_policies WHERE schemaname = ANY(%(scope)s)""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_result(p.oid), p.prokind, p.provolatile, p.prosecdef,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,
               p.proowner::regrole::text, p.proacl::text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = ANY(%(scope)s)""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod),
               t.typnotnull, pg_get_expr(t.typdefaultbin, 0)
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = ANY(%(scope)s)""",
    "triggers": """
        SELECT n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid), g.tgenabled
          FROM pg_trigger g
          JOIN pg_class c ON c.oid = g.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(scope)s) AND NOT g.tgisinternal""",
    "comments": """
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
          FROM pg_description d, pg_identify_object(d.classoid, d.objoid, d.objsubid) i
         WHERE i.schema = ANY(%(scope)s)
            OR (d.classoid = 'pg_namespace'::regclass AND i.identity = ANY(%(scope)s))""",
    # Every privilege or ownership a non-bootstrap role holds on an object of this database
    # (rag_app is cluster-wide: what it is granted here is what a rollback must take back).
    "role_dependencies": """
        SELECT pg_describe_object(s.classid, s.objid, s.objsubid), s.refobjid::regrole::text,
               s.deptype
          FROM pg_shdepend s
         WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND s.refclassid = 'pg_authid'::regclass""",
    "database_acl": """
        SELECT datacl::text FROM pg_database WHERE datname = current_database()""",
    "default_acls": """
        SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype,
               defaclacl::text FROM pg_default_acl""",
}


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _catalog(url: str) -> Catalog:
    """The snapshot of the database at ``url`` (see ``_CATALOG_QUERIES``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return _read_catalog(conn)


def _read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    snapshot: Catalog = {}
    for section, query in _CATALOG_QUERIES.items():
        rows = [tuple(_hashable(v) for v in r)
                for r in conn.execute(query, {"scope": list(SCOPE)}).fetchall()]
        # Only columns keep their order; everything else is a set.
        snapshot[section] = rows if section == "columns" else set(rows)
    tables = conn.execute(
        "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
        " WHERE schemaname = ANY(%s) ORDER BY 1", [list(SCOPE)]).fetchall()
    snapshot["row_counts"] = {
        (name, conn.execute(f"SELECT count(*) FROM {name}").fetchone())  # noqa: S608
        for (name,) in tables}
    return snapshot


def _differences(expected: Catalog, actual: Catalog) -> dict[str, dict[str, Any]]:
    """Per section: what only the expected and only the actual snapshot hold."""
    found: dict[str, dict[str, Any]] = {}
    for section in sorted(set(expected) | set(actual)):
        want, got = expected.get(section, set()), actual.get(section, set())
        if want == got:
            continue
        if isinstance(want, list) and isinstance(got, list) and sorted(want) == sorted(got):
            found[section] = {"order": {"expected": want, "actual": got}}
        else:
            found[section] = {"missing": sorted(set(want) - set(got), key=repr),
                              "unexpected": sorted(set(got) - set(want), key=repr)}
    return found


def _without_kept_objects(snapshot: Catalog) -> Catalog:
    """``snapshot`` without what rolling back everything keeps on purpose: the ledger (schema
    ``rag_meta``, so the database still knows nothing is applied) and the ``vector``
    extension (it may serve other schemas; see 0001's down file). The cluster-wide
    ``rag_app`` role is not part of a database's catalog; grants to it are."""

    def kept(section: str, row: tuple[Any, ...]) -> bool:
        if section == "extensions":
            return row[0] == "vector"
        return row[0] == "rag_meta" or any("rag_meta." in str(value) for value in row)

    return {section: ([r for r in rows if not kept(section, r)] if isinstance(rows, list)
                      else {r for r in rows if not kept(section, r)})
            for section, rows in snapshot.items()}


def _ledger_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT version FROM rag_meta.schema_migrations ORDER BY version").fetchall()]


# What an incomplete down file could leave behind, and the section that must notice it.
LEFTOVERS = {
    "an index": ("indexes", "CREATE INDEX leftover ON rag.chunks (ordinal)"),
    "a policy expression": ("policies",
                            "ALTER POLICY tenant_isolation ON rag.chunks USING (true)"),
    "a function body": ("functions", "CREATE OR REPLACE FUNCTION rag.current_tenant_id() "
                                     "RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'x' $$"),
    "a column default": ("columns", "ALTER TABLE rag.chunks ALTER ordinal SET DEFAULT 0"),
    "a column type": ("columns", "ALTER TABLE rag.documents ALTER title TYPE varchar"),
    "a table grant": ("relations", "GRANT INSERT ON rag.tenants TO rag_app"),
    "a column grant": ("columns", "GRANT UPDATE (display_name) ON rag.tenants TO rag_app"),
    "a grant outside rag": ("role_dependencies", "GRANT CREATE ON SCHEMA public TO rag_app"),
    "a type": ("types", "CREATE TYPE rag.leftover AS ENUM ('a')"),
    "a domain check": ("constraints", "ALTER DOMAIN rag.tenant_id ADD CONSTRAINT leftover "
                                      "CHECK (length(VALUE) > 3)"),
    "unforced RLS": ("relations", "ALTER TABLE rag.chunks NO FORCE ROW LEVEL SECURITY"),
    "a row": ("row_counts", "INSERT INTO rag.feature_flags (flag_key) VALUES ('leftover')"),
    "a schema": ("schemas", "CREATE SCHEMA leftover"),
    "a comment": ("comments", "COMMENT ON TABLE rag.chunks IS 'leftover'"),
}


@pytest.fixture(scope="module")
def migrated_url(create_database: Callable[[str], Settings]) -> str:
    settings = create_database("snap")
    services.upgrade_database(settings)
    return resolve_targets(settings).admin_url


@pytest.mark.parametrize("leftover", sorted(LEFTOVERS))
def test_the_catalog_snapshot_notices_a_leftover(migrated_url: str, leftover: str) -> None:
    section, statement = LEFTOVERS[leftover]
    with psycopg.connect(migrated_url) as conn:  # one transaction, rolled back
        clean = _read_catalog(conn)
        conn.execute(statement)
        changed = _read_catalog(conn)
        conn.rollback()
    assert section in _differences(clean, changed)
    assert _differences(clean, _catalog(migrated_url)) == {}


def test_full_rollback_restores_the_catalog_of_a_fresh_database(
        create_database: Callable[[str], Settings]) -> None:
    settings = create_database("rollall")
    url = resolve_targets(settings).admin_url
    fresh = _catalog(url)
    assert not [r for r in fresh["schemas"] if r[0] in SCOPE]

    services.upgrade_database(settings)
    migrated = _catalog(url)
    # The snapshot sees what the migrations made (else the comparison below proves nothing).
    assert {r[1] for r in migrated["relations"] if r[0] == "rag"} >= EXPECTED_TABLES
    # One tenant predicate everywhere, 0010's owner lookup and 0013's reporting read
    # (rag_core.db.schema).
    assert {r[2] for r in migrated["policies"]} == {"tenant_isolation", "api_key_resolution",
                                                    "reporting_read"}
    assert {r[1] for r in migrated["functions"]} >= {"search_chunks", "current_tenant_id"}
    assert ("rag.embedding_models", (1,)) in migrated["row_counts"]
    assert any(r[1] == "rag_app" for r in migrated["role_dependencies"])
    assert _differences(fresh, migrated)

    services.downgrade_database(settings, 0)
    rolled_back = _catalog(url)
    assert _differences(_without_kept_objects(fresh),
                        _without_kept_objects(rolled_back)) == {}
    # What is kept on purpose is there, and says nothing is applied.
    assert ("rag_meta", "schema_migrations", "r") in {r[:3] for r in rolled_back["relations"]}
    assert _ledger_versions(url) == []
    assert "vector" in {r[0] for r in rolled_back["extensions"]}


def test_every_migration_has_a_working_rollback(create_database: Callable[[str], Settings]) -> None:
    """For every version N: the catalog after upgrading to N+1 and rolling back to N is the
    catalog after N, and applying N+1 again gives the catalog of its first application."""
    settings = create_database("rollback")
    url = resolve_targets(settings).admin_url
    versions = [0] + [m.version for m in migrations.discover(settings.migrations_dir)]
    before = _catalog(url)
    for version, following in itertools.pairwise(versions):
        services.upgrade_database(settings, target=following)
        after = _catalog(url)
        assert _ledger_versions(url) == versions[1:versions.index(following) + 1]

        assert services.downgrade_database(settings, version) == [following]
        restored = _catalog(url)
        if version == 0:  # the ledger and the extension stay (see the test above)
            diff = _differences(_without_kept_objects(before), _without_kept_objects(restored))
        else:
            diff = _differences(before, restored)
        assert diff == {}, f"rolling back {following:04d} to {version:04d} left: {diff}"

        assert services.upgrade_database(settings, target=following).applied == [following]
        again = _catalog(url)
        diff = _differences(after, again)
        assert diff == {}, f"re-applying {following:04d} after its rollback differs: {diff}"
        before = again


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


# --- 0007: tenant-scoped foreign keys on a database holding data ------------------------------
def _seed_two_tenants_as_owner(url: str) -> tuple[str, str, dict[str, int]]:
    """Two tenants with a row in every table of a parent/child pair, written as the owner
    (as an operator's bulk load would); returns the tenants and one id per parent."""
    a, b = (f"tn_{secrets.token_hex(16)}" for _ in range(2))
    ids: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for tenant in (a, b):
            conn.execute("INSERT INTO rag.tenants (tenant_id) VALUES (%s)", [tenant])
            doc = conn.execute(
                "INSERT INTO rag.documents (tenant_id, source_uri, content_hash) "
                "VALUES (%s, 'seed://doc', '\\x00') RETURNING document_id", [tenant]).fetchone()
            assert doc is not None
            chunk = conn.execute(
                "INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, token_count, "
                "content_hash) VALUES (%s, %s, 0, 'seed', 1, '\\x00') RETURNING chunk_id",
                [tenant, doc[0]]).fetchone()
            assert chunk is not None
            conn.execute("INSERT INTO rag.chunk_embeddings (chunk_id, model_key, tenant_id, "
                         "embedding) VALUES (%s, 'minilm-l6-v2', %s, "
                         "array_fill(0.1, ARRAY[384])::vector)", [chunk[0], tenant])
            job = conn.execute("INSERT INTO rag.ingestion_jobs (tenant_id, source_uri) "
                               "VALUES (%s, 'seed://') RETURNING job_id", [tenant]).fetchone()
            assert job is not None
            conn.execute("INSERT INTO rag.ingestion_items (job_id, item_no, tenant_id, "
                         "source_uri, body, content_hash) VALUES (%s, 0, %s, 'seed://1', 'b', "
                         "'\\x00')", [job[0], tenant])
            conn.execute("INSERT INTO rag.ingestion_errors (job_id, tenant_id, source, reason) "
                         "VALUES (%s, %s, 'seed', 'seeded')", [job[0], tenant])
            if tenant == a:
                ids = {"document": int(doc[0]), "chunk": int(chunk[0])}
    return a, b, ids


def _data_counts(url: str) -> set[tuple[Any, ...]]:
    """Row counts of the product's tables (the ledger, which a migration changes, left out)."""
    return {row for row in _catalog(url)["row_counts"] if str(row[0]).startswith("rag.")}


_CROSS_TENANT_CHUNK = ("INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, "
                       "token_count, content_hash) VALUES (%s, %s, 99, 'x', 1, '\\x00')")


def _cross_tenant_chunk_accepted(url: str, tenant: str, foreign_document: int) -> bool:
    """Whether the database takes a chunk of ``tenant`` pointing at another tenant's
    document (tried in a transaction that is rolled back)."""
    with psycopg.connect(url) as conn:
        try:
            conn.execute(_CROSS_TENANT_CHUNK, [tenant, foreign_document])
        except psycopg.errors.ForeignKeyViolation:
            return False
        finally:
            conn.rollback()
    return True


def test_0007_applies_and_rolls_back_on_a_database_with_data(
        create_database: Callable[[str], Settings]) -> None:
    settings = create_database("fkdata")
    url = resolve_targets(settings).admin_url
    services.upgrade_database(settings, target=6)
    a, b, ids = _seed_two_tenants_as_owner(url)
    seeded = _data_counts(url)
    assert _cross_tenant_chunk_accepted(url, b, ids["document"])  # the hole 0007 closes

    assert services.upgrade_database(settings, target=7).applied == [7]
    assert _data_counts(url) == seeded  # nothing lost or added
    assert not _cross_tenant_chunk_accepted(url, b, ids["document"])
    with psycopg.connect(url) as conn:  # the tenant's own parent still works
        conn.execute(_CROSS_TENANT_CHUNK, [a, ids["document"]])
        conn.rollback()

    assert services.downgrade_database(settings, 6) == [7]
    assert _data_counts(url) == seeded
    assert _cross_tenant_chunk_accepted(url, b, ids["document"])  # the old state, restored


def test_0007_refuses_a_database_holding_a_cross_tenant_row(
        create_database: Callable[[str], Settings]) -> None:
    settings = create_database("fkbad")
    url = resolve_targets(settings).admin_url
    services.upgrade_database(settings, target=6)
    _, b, ids = _seed_two_tenants_as_owner(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_CROSS_TENANT_CHUNK, [b, ids["document"]])
    before = _data_counts(url)

    with pytest.raises(MigrationError) as info:
        services.upgrade_database(settings, target=7)
    assert info.value.version == 7
    assert "rag.chunks has 1 row(s) whose document belongs to another tenant" in str(info.value)
    assert f"(tenant {b})" in str(info.value)
    assert _ledger_versions(url) == [1, 2, 3, 4, 5, 6]
    assert _data_counts(url) == before  # the offending row is kept for a human
