"""``rag tenant key create|list|rotate|revoke`` through the installed console script, against
the test servers: the ``--json`` last lines, the key shown once, typed failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.api_keys import ApiKeys
from rag_core.db.pool import Database
from rag_core.redis.embedded import EmbeddedRedis
from tests.cli.test_failures import assert_one_line_failure, run_rag, run_rag_json, servers_env

KEY_FIELDS = {"key", "key_id", "tenant_id", "name", "created_at"}
INFO_FIELDS = {"key_id", "tenant_id", "name", "created_at", "revoked_at", "replaced_by", "live"}


@pytest.fixture()
def env(settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> dict[str, str]:
    """The test servers given as URLs, with an empty state folder (as in test_failures)."""
    return servers_env(settings, redis_server.url(), tmp_path)


@pytest.fixture()
def keys(settings: Settings, db: Database) -> ApiKeys:
    return Platform(settings, database=db, start_services=False).api_keys


def test_create_list_rotate_revoke_with_json(env: dict[str, str], tmp_path: Path,
                                             keys: ApiKeys,
                                             make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    created = run_rag_json(["tenant", "key", "create", tenant, "--name", "ci bot"], env, tmp_path)
    assert set(created) == KEY_FIELDS
    assert (created["tenant_id"], created["name"]) == (tenant, "ci bot")
    assert created["key"].startswith(f"rag_{created['key_id']}_")
    assert keys.resolve(created["key"]) == tenant

    listed = run_rag_json(["tenant", "key", "list", tenant], env, tmp_path)
    assert listed["tenant_id"] == tenant
    assert [set(k) for k in listed["keys"]] == [INFO_FIELDS]
    assert listed["keys"][0]["key_id"] == created["key_id"] and listed["keys"][0]["live"]
    assert created["key"] not in json.dumps(listed)

    rotated = run_rag_json(["tenant", "key", "rotate", tenant, created["key_id"]], env, tmp_path)
    assert set(rotated) == KEY_FIELDS | {"replaces"}
    assert rotated["replaces"] == created["key_id"] and rotated["name"] == "ci bot"
    assert keys.resolve(created["key"]) is None
    assert keys.resolve(rotated["key"]) == tenant

    revoked = run_rag_json(["tenant", "key", "revoke", tenant, rotated["key_id"]], env, tmp_path)
    assert set(revoked) == INFO_FIELDS
    assert revoked["revoked_at"] is not None and revoked["live"] is False
    assert keys.resolve(rotated["key"]) is None

    final = run_rag_json(["tenant", "key", "list", tenant], env, tmp_path)
    assert [(k["key_id"], k["live"], k["replaced_by"]) for k in final["keys"]] == [
        (created["key_id"], False, rotated["key_id"]), (rotated["key_id"], False, None)]


def test_a_human_create_prints_the_key_once_with_a_warning(
        env: dict[str, str], tmp_path: Path, keys: ApiKeys,
        make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    result = run_rag(["tenant", "key", "create", tenant], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = [word for word in result.stdout.split() if word.startswith("rag_")]
    assert len(printed) == 1
    assert keys.resolve(printed[0]) == tenant
    assert "will not be shown again" in result.stderr
    assert "{" not in result.stdout


def test_an_unknown_key_id_fails_typed(env: dict[str, str], tmp_path: Path,
                                       make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    result = run_rag(["tenant", "key", "revoke", tenant, "0123456789ab", "--json"], env,
                     tmp_path)
    line, _ = assert_one_line_failure(result, ErrorCode.NOT_FOUND)
    assert "0123456789ab" in line and tenant in line


def test_key_administration_is_refused_in_a_runtime_only_process(
        env: dict[str, str], tmp_path: Path, make_tenant: Callable[[], TenantId]) -> None:
    result = run_rag(["tenant", "key", "create", make_tenant(), "--json"],
                     env | {"RAG_RUNTIME_ONLY": "true"}, tmp_path)
    line, _ = assert_one_line_failure(result, ErrorCode.CONFIGURATION_INVALID)
    assert "RAG_RUNTIME_ONLY" in line
