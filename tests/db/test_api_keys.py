"""Per-tenant API keys against the real database: what is stored (never the key), what
resolves (a live key only), who sees what (RLS, the application role), and what the cached
resolver asks the database (nothing within its ttl)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import migrations, tenant_admin
from rag_core.db.api_key_format import parse_key
from rag_core.db.api_keys import ApiKeys, CachedKeyResolver, IssuedKey
from rag_core.db.connection import connect, resolve_targets
from rag_core.db.pool import Database
from rag_core.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    UnknownApiKeyError,
    UnknownTenantError,
)

Connection = psycopg.Connection[tuple[Any, ...]]
KEY_FORMAT = re.compile(r"rag_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture()
def keys(settings: Settings, db: Database) -> ApiKeys:
    return Platform(settings, database=db, start_services=False).api_keys


def _rows_as_text(admin_conn: Connection) -> list[str]:
    """Every column of every row of rag.api_keys, as the superuser (RLS does not apply)."""
    return [str(row[0]) for row in admin_conn.execute(
        "SELECT to_jsonb(k)::text FROM rag.api_keys k").fetchall()]


# --- the format -----------------------------------------------------------------------------
def test_an_issued_key_has_the_documented_format(keys: ApiKeys,
                                                 make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant, "ci")
    assert KEY_FORMAT.fullmatch(issued.key)
    assert issued.key.startswith(f"rag_{issued.info.key_id}_")
    assert (issued.info.tenant_id, issued.info.name, issued.info.live) == (tenant, "ci", True)
    parsed = parse_key(issued.key)
    assert parsed is not None and parsed.key_id == issued.info.key_id
    assert issued.key not in repr(issued)  # a logged IssuedKey does not leak the key


_GOOD = "rag_0123456789ab_" + "A" * 43


@pytest.mark.parametrize("candidate", [
    "", "rag_", _GOOD + "\n", " " + _GOOD, _GOOD + " ", _GOOD.upper(),
    "RAG_0123456789ab_" + "A" * 43, "rag_0123456789AB_" + "A" * 43,
    "rag_0123456789a_" + "A" * 44, "rag_0123456789abc_" + "A" * 42,
    "rag_0123456789ab_" + "A" * 42, "rag_0123456789ab_" + "A" * 44,
    "rag_0123456789ab_" + "A" * 42 + "B",    # a last character token_urlsafe(32) never ends on
    "rag_0123456789ab_" + "A" * 42 + "=", "rag_0123456789ab-" + "A" * 43,
    "rag_0123456789ab_" + "A" * 41 + "+A", "tn_" + "0" * 32, None, 42, b"rag_",
])
def test_anything_else_is_not_a_key(candidate: object) -> None:
    assert parse_key(_GOOD) is not None
    assert parse_key(candidate) is None


# --- storage --------------------------------------------------------------------------------
def test_the_table_holds_no_plaintext_key(keys: ApiKeys, admin_conn: Connection,
                                          make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = [keys.create(tenant, "one"), keys.create(tenant, "two")]
    issued.append(keys.rotate(tenant, issued[0].info.key_id))
    rows = _rows_as_text(admin_conn)
    assert len(rows) >= 3
    for key in issued:
        secret = key.key.removeprefix(f"rag_{key.info.key_id}_")
        assert len(secret) == 43
        for row in rows:
            assert key.key not in row and secret not in row
        stored = admin_conn.execute("SELECT key_hash FROM rag.api_keys WHERE key_id = %s",
                                    [key.info.key_id]).fetchone()
        assert stored == (hashlib.sha256(key.key.encode()).hexdigest(),)


def test_listing_gives_every_key_of_the_tenant_but_never_a_key_or_hash(
        keys: ApiKeys, make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    first, second = keys.create(tenant, "first"), keys.create(tenant, "second")
    keys.revoke(tenant, second.info.key_id)
    listed = keys.list(tenant)
    assert [(k.key_id, k.name, k.live) for k in listed] == [
        (first.info.key_id, "first", True), (second.info.key_id, "second", False)]
    for info in listed:
        shown = repr(info) + repr(info.as_dict())
        assert first.key not in shown and second.key not in shown
        assert "hash" not in shown
    assert keys.list(make_tenant()) == []


def test_a_key_for_a_tenant_that_does_not_exist_is_refused(keys: ApiKeys) -> None:
    with pytest.raises(UnknownTenantError, match="does not exist"):
        keys.create(new_tenant_id())


@pytest.mark.parametrize("name", ["x" * 101, "tab\there", "line\nbreak"])
def test_a_name_too_long_or_with_control_characters_is_refused(
        keys: ApiKeys, make_tenant: Callable[[], TenantId], name: str) -> None:
    with pytest.raises(ConfigurationError, match="api key name"):
        keys.create(make_tenant(), name)


# --- resolution -----------------------------------------------------------------------------
def test_resolve_gives_the_tenant_of_a_live_key_only(
        keys: ApiKeys, make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    live, revoked, rotated = (keys.create(tenant, n) for n in ("live", "revoked", "rotated"))
    assert keys.resolve(live.key) == tenant
    assert keys.resolve(revoked.key) == tenant
    keys.revoke(tenant, revoked.info.key_id)
    assert keys.resolve(revoked.key) is None

    replacement = keys.rotate(tenant, rotated.info.key_id)
    assert replacement.replaces == rotated.info.key_id
    assert replacement.info.name == "rotated"
    assert keys.resolve(rotated.key) is None
    assert keys.resolve(replacement.key) == tenant
    old = next(k for k in keys.list(tenant) if k.key_id == rotated.info.key_id)
    assert not old.live and old.replaced_by == replacement.info.key_id

    wrong_secret = f"rag_{live.info.key_id}_{secrets.token_urlsafe(32)}"
    unknown = f"rag_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    for refused in (wrong_secret, unknown, live.key + "x", live.key.upper(), "", "Bearer x"):
        assert keys.resolve(refused) is None, refused
    assert keys.resolve(live.key) == tenant


def test_rotating_a_revoked_or_unknown_key_and_revoking_an_unknown_one_are_refused(
        keys: ApiKeys, make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant)
    first = keys.revoke(tenant, issued.info.key_id)
    assert keys.revoke(tenant, issued.info.key_id) == first  # again: unchanged
    with pytest.raises(UnknownApiKeyError, match=f"no live API key '{issued.info.key_id}'"):
        keys.rotate(tenant, issued.info.key_id)
    for key_id in ("0" * 12, "not-a-key-id"):
        with pytest.raises(UnknownApiKeyError, match=f"{tenant} has no API key '{key_id}'"):
            keys.revoke(tenant, key_id)


def test_the_resolution_function_reveals_only_the_tenant_and_only_to_the_app_role(
        admin_conn: Connection, db: Database, keys: ApiKeys,
        make_tenant: Callable[[], TenantId]) -> None:
    row = admin_conn.execute(
        "SELECT p.prosecdef, p.proconfig, pg_get_function_result(p.oid), "
        "       has_function_privilege('rag_app', p.oid, 'EXECUTE'), "
        "       array(SELECT (aclexplode(p.proacl)).grantee::regrole::text) "
        "  FROM pg_proc p WHERE p.oid = 'rag.api_key_tenant(text, text)'::regprocedure"
    ).fetchone()
    assert row is not None
    definer, config, result, app_may, grantees = row
    assert definer and result == "text" and app_may
    assert "search_path=pg_catalog, pg_temp" in config
    assert "-" not in grantees  # no grant to PUBLIC (aclexplode names it "-")

    tenant = make_tenant()
    issued = keys.create(tenant)
    parsed = parse_key(issued.key)
    assert parsed is not None
    with db.unscoped_session() as conn:
        call = "SELECT rag.api_key_tenant(%s, %s)"
        assert conn.execute(call, [parsed.key_id, parsed.key_hash]).fetchone() == (tenant,)
        for args in ([parsed.key_id, "0" * 64], [parsed.key_id, None], [None, parsed.key_hash],
                     ["' OR true --", parsed.key_hash]):
            assert conn.execute(call, args).fetchone() == (None,), args
        # The lookup's setting does not outlive the call in the caller's transaction.
        setting = conn.execute("SELECT current_setting('app.api_key_id', true)").fetchone()
        assert setting is not None and not setting[0]
        # ... and setting it by hand gives the application role nothing: the lookup policy
        # is the owner's.
        conn.execute("SELECT set_config('app.api_key_id', %s, true)", [parsed.key_id])
        assert conn.execute("SELECT count(*) FROM rag.api_keys").fetchone() == (0,)


# --- tenants apart --------------------------------------------------------------------------
def test_one_tenant_cannot_list_rotate_or_revoke_anothers_keys(
        keys: ApiKeys, db: Database, make_tenant: Callable[[], TenantId]) -> None:
    a, b = make_tenant(), make_tenant()
    key_a, key_b = keys.create(a, "a"), keys.create(b, "b")
    assert [k.key_id for k in keys.list(a)] == [key_a.info.key_id]
    with pytest.raises(UnknownApiKeyError, match=key_b.info.key_id):
        keys.revoke(a, key_b.info.key_id)
    with pytest.raises(UnknownApiKeyError, match=key_b.info.key_id):
        keys.rotate(a, key_b.info.key_id)
    assert keys.resolve(key_b.key) == b  # untouched
    assert [k.live for k in keys.list(b)] == [True]

    # As the application role in a's session, b's rows do not exist.
    with db.tenant_session(a) as conn:
        rows = conn.execute("SELECT tenant_id, key_id FROM rag.api_keys").fetchall()
        assert rows == [(a, key_a.info.key_id)]
        assert conn.execute("SELECT count(*) FROM rag.api_keys WHERE key_id = %s",
                            [key_b.info.key_id]).fetchone() == (0,)


@pytest.mark.parametrize("statement", [
    "SELECT key_hash FROM rag.api_keys",
    "SELECT * FROM rag.api_keys",
    "UPDATE rag.api_keys SET revoked_at = NULL",
    "DELETE FROM rag.api_keys",
    "INSERT INTO rag.api_keys (key_id, tenant_id, key_hash) "
    "VALUES ('0123456789ab', %(tenant)s, repeat('0', 64))",
])
def test_the_application_role_reads_no_hash_and_writes_no_key(
        db: Database, make_tenant: Callable[[], TenantId], statement: str) -> None:
    tenant = make_tenant()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), \
            db.tenant_session(tenant) as conn:
        conn.execute(statement, {"tenant": tenant} if "%(tenant)s" in statement else None)


def test_deleting_a_tenant_deletes_its_keys(keys: ApiKeys, settings: Settings,
                                            admin_conn: Connection) -> None:
    tenant = tenant_admin.create_tenant(admin_conn, display_name="doomed")
    issued = keys.create(tenant)
    keys.rotate(tenant, issued.info.key_id)  # a replaced_by link to delete through too
    keep = tenant_admin.create_tenant(admin_conn, display_name="kept")
    kept = keys.create(keep)
    try:
        assert tenant_admin.delete_tenant(admin_conn, tenant).existed
        assert admin_conn.execute("SELECT count(*) FROM rag.api_keys WHERE tenant_id = %s",
                                  [tenant]).fetchone() == (0,)
        assert keys.resolve(issued.key) is None
        assert keys.resolve(kept.key) == keep
    finally:
        tenant_admin.delete_tenant(admin_conn, keep)


def test_management_is_refused_in_a_runtime_only_process(
        settings: Settings, db: Database, keys: ApiKeys,
        make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant)
    runtime = Platform(settings.model_copy(update={"runtime_only": True}), database=db,
                       start_services=False)
    for attempt in (lambda: runtime.api_keys.create(tenant),
                    lambda: runtime.api_keys.list(tenant),
                    lambda: runtime.api_keys.revoke(tenant, issued.info.key_id)):
        with pytest.raises(ConfigurationError, match="RAG_RUNTIME_ONLY"):
            attempt()
    assert runtime.key_resolver.resolve(issued.key) == tenant  # resolution needs no admin
    assert runtime.key_resolver.ttl_s == settings.api.api_key_cache_ttl_s == 5.0


# --- an owner that is not a superuser -------------------------------------------------------
@pytest.fixture()
def owner_database(create_database: Callable[[str], Settings],
                   admin_conn: Connection) -> Iterator[tuple[str, str, str]]:
    """A database migrated by a role that owns the schema but is not a superuser (as with a
    managed PostgreSQL): (its URL as that owner, the application URL, the owner's name)."""
    settings = create_database("keyowner")
    targets = resolve_targets(settings)
    role, password = f"rag_test_owner_{secrets.token_hex(4)}", secrets.token_hex(16)
    admin_conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {}")
                       .format(sql.Identifier(role), sql.Literal(password)))
    with connect(targets.admin_url) as conn:  # as the superuser, in the new database
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(targets.database_name), sql.Identifier(role)))
    # what a DBA grants a managed server's admin once (README: migration 0013 hands the
    # reporting views to rag_reporting_owner, and ALTER ... OWNER needs SET ROLE to it)
    admin_conn.execute(sql.SQL("GRANT rag_reporting_owner, rag_analyst TO {} "
                               "WITH INHERIT FALSE").format(sql.Identifier(role)))
    owner_url = psycopg.conninfo.make_conninfo(targets.admin_url, user=role, password=password)
    try:
        with connect(owner_url) as conn:
            migrations.upgrade(conn, settings.migrations_dir)
        yield owner_url, targets.app_url, role
    finally:
        with connect(targets.admin_url) as conn:
            # CASCADE: the schemas it owns hold views of rag_reporting_owner
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        admin_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_keys_resolve_when_the_schema_owner_is_not_a_superuser(
        owner_database: tuple[str, str, str], settings: Settings) -> None:
    owner_url, app_url, role = owner_database
    with connect(owner_url) as conn:
        tenant = tenant_admin.create_tenant(conn)
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False,)
        # FORCEd RLS confines the owner: outside a tenant's session it sees no key...
        owner_keys = ApiKeys(lambda: database, admin=lambda: connect(owner_url))
        with Database(app_url, min_size=1, max_size=1) as database:
            issued = owner_keys.create(tenant, "managed")
            assert conn.execute("SELECT count(*) FROM rag.api_keys").fetchone() == (0,)
            # ... yet the definer function, which runs as the owner, finds the live key.
            assert owner_keys.resolve(issued.key) == tenant
            owner_keys.revoke(tenant, issued.info.key_id)
            assert owner_keys.resolve(issued.key) is None
        policy = conn.execute("SELECT polroles::regrole[]::text FROM pg_policy "
                              "WHERE polname = 'api_key_resolution'").fetchone()
        assert policy == ("{" + role + "}",)


# --- the cached resolver --------------------------------------------------------------------
class CountingKeys:
    """The real ApiKeys, counting the lookups that reach the database."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys
        self.lookups = 0
        self.fail_next = False
        self._lock = threading.Lock()

    def resolve(self, key: str) -> TenantId | None:
        with self._lock:
            self.lookups += 1
            if self.fail_next:
                self.fail_next = False
                raise DatabaseUnavailableError("(test)", "made to fail once")
        return self.keys.resolve(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def counted(keys: ApiKeys) -> CountingKeys:
    return CountingKeys(keys)


def test_a_cached_answer_asks_no_database_within_ttl_and_a_fresh_one_after(
        keys: ApiKeys, counted: CountingKeys, make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant)
    unknown = f"rag_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    clock = Clock()
    resolver = CachedKeyResolver(counted, ttl_s=5.0, clock=clock)

    assert [resolver.resolve(issued.key) for _ in range(3)] == [tenant] * 3
    assert [resolver.resolve(unknown) for _ in range(3)] == [None] * 3
    assert counted.lookups == 2  # one per key: the negative answer is kept too

    keys.revoke(tenant, issued.info.key_id)
    clock.now += 4.9
    assert resolver.resolve(issued.key) == tenant  # stale within ttl, by design
    assert counted.lookups == 2
    clock.now += 0.2  # past ttl
    assert resolver.resolve(issued.key) is None
    assert counted.lookups == 3
    assert resolver.resolve(issued.key) is None
    assert counted.lookups == 3  # the refusal is kept in turn


def test_the_resolver_keeps_hashes_not_keys_and_looks_up_no_malformed_key(
        keys: ApiKeys, counted: CountingKeys, make_tenant: Callable[[], TenantId]) -> None:
    issued = keys.create(make_tenant())
    resolver = CachedKeyResolver(counted, ttl_s=60.0)
    for junk in ("", "rag_", issued.key + " ", "x" * 10_000, issued.key.upper()):
        assert resolver.resolve(junk) is None
    assert counted.lookups == 0 and len(resolver) == 0
    resolver.resolve(issued.key)
    secret = issued.key.rsplit("_", 1)[-1][-20:]
    memory = repr(vars(resolver)) + repr(vars(vars(resolver)["_live"]))
    assert issued.key not in memory and secret not in memory
    assert hashlib.sha256(issued.key.encode()).hexdigest() in memory


def test_made_up_keys_cannot_evict_a_live_one(keys: ApiKeys, counted: CountingKeys,
                                              make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant)
    resolver = CachedKeyResolver(counted, ttl_s=60.0, max_entries=2)
    assert resolver.resolve(issued.key) == tenant
    for _ in range(5):
        assert resolver.resolve(f"rag_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}") is None
    assert len(resolver) == 3  # the live key and the last two refusals
    before = counted.lookups
    assert resolver.resolve(issued.key) == tenant
    assert counted.lookups == before


def test_a_failed_lookup_is_not_kept(keys: ApiKeys, counted: CountingKeys,
                                     make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant)
    resolver = CachedKeyResolver(counted, ttl_s=60.0)
    counted.fail_next = True
    with pytest.raises(DatabaseUnavailableError):
        resolver.resolve(issued.key)
    assert resolver.resolve(issued.key) == tenant
    assert counted.lookups == 2


def test_ttl_zero_asks_every_time(keys: ApiKeys, counted: CountingKeys,
                                  make_tenant: Callable[[], TenantId]) -> None:
    issued = keys.create(make_tenant())
    resolver = CachedKeyResolver(counted, ttl_s=0)
    for _ in range(3):
        resolver.resolve(issued.key)
    assert counted.lookups == 3 and len(resolver) == 0


def test_concurrent_resolutions_agree(keys: ApiKeys, counted: CountingKeys,
                                      make_tenant: Callable[[], TenantId]) -> None:
    tenants = [make_tenant() for _ in range(3)]
    issued: list[IssuedKey] = [keys.create(t) for t in tenants]
    resolver = CachedKeyResolver(counted, ttl_s=60.0)
    wrong: list[tuple[str, TenantId | None]] = []

    def work(offset: int) -> None:
        for i in range(60):
            item = issued[(i + offset) % len(issued)]
            got = resolver.resolve(item.key)
            if got != item.info.tenant_id:
                wrong.append((item.info.key_id, got))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    # A key missed by several threads at once may be looked up by each of them, no more.
    assert len(issued) <= counted.lookups <= len(issued) * len(threads)


def test_kept_answers_from_memory_only_and_never_asks_the_database(
        keys: ApiKeys, counted: CountingKeys, make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    issued = keys.create(tenant)
    clock = Clock()
    resolver = CachedKeyResolver(counted, ttl_s=5.0, clock=clock)

    assert resolver.kept(issued.key) == (False, None)  # only the database can tell yet
    assert resolver.kept("not a key") == (True, None)  # refused without any lookup
    assert resolver.resolve(issued.key) == tenant
    assert resolver.kept(issued.key) == (True, tenant)
    clock.now += 5.1  # past ttl: the database must be asked again
    assert resolver.kept(issued.key) == (False, None)
    assert CachedKeyResolver(counted, ttl_s=0).kept(issued.key) == (False, None)
    assert counted.lookups == 1
