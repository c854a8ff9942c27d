"""``rag analytics sql|url``: an analyst's SQL runs as the analytics role, read only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.connection import resolve_analytics_target
from rag_core.errors import DatabaseError, InputError
from rag_core.ops.analytics.queries import analytics_url, run_analytics_query
from rag_core.redis.embedded import EmbeddedRedis
from tests.cli.test_failures import run_rag_json, servers_env


def _audit(admin_conn: psycopg.Connection[tuple[Any, ...]], tenant: TenantId,
           prompt_tokens: int) -> None:
    admin_conn.execute(
        "INSERT INTO rag.audit_log (tenant_id, request_id, kind, prompt_tokens) "
        "VALUES (%s, gen_random_uuid(), 'query', %s)", [tenant, prompt_tokens])


def test_the_query_runs_as_the_analyst_over_every_tenant(
        settings: Settings, make_tenant: Callable[[], TenantId],
        admin_conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    first, second = make_tenant(), make_tenant()
    _audit(admin_conn, first, 11)
    _audit(admin_conn, second, 22)
    query = sql.SQL("SELECT current_user AS who, tenant_id, sum(prompt_tokens) AS tokens "
                    "FROM rag_reporting.audit_log WHERE tenant_id IN ({}, {}) "
                    "GROUP BY tenant_id ORDER BY tokens").format(first, second)
    result = run_analytics_query(settings, query.as_string())
    assert result.columns == ["who", "tenant_id", "tokens"]
    assert result.rows == [("rag_analyst", first, 11), ("rag_analyst", second, 22)]
    assert not result.truncated


def test_content_and_writes_are_refused_and_rows_are_capped(settings: Settings) -> None:
    with pytest.raises(DatabaseError, match="as rag_analyst: permission denied"):
        run_analytics_query(settings, "SELECT text FROM rag.chunks")
    with pytest.raises(DatabaseError, match="read-only transaction"):
        run_analytics_query(settings, "CREATE TABLE rag_analytics.scratch (x int)")
    with pytest.raises(InputError, match="empty"):
        run_analytics_query(settings, "  ")
    capped = run_analytics_query(settings, "SELECT g FROM generate_series(1, 5) g", max_rows=3)
    assert (capped.rows, capped.truncated) == ([(1,), (2,), (3,)], True)
    assert capped.as_dict()["row_count"] == 3


def test_the_cli_prints_rows_and_a_masked_url(settings: Settings, redis_server: EmbeddedRedis,
                                              tmp_path: Path) -> None:
    env = servers_env(settings, redis_server.url(), tmp_path)
    target = resolve_analytics_target(settings)
    env["RAG_ANALYTICS_DATABASE_URL"] = target.url
    payload = run_rag_json(["analytics", "sql", "SELECT current_user AS who, 1 + 1 AS two"],
                           env, tmp_path)
    assert (payload["columns"], payload["rows"]) == (["who", "two"], [["rag_analyst", 2]])
    shown = run_rag_json(["analytics", "url"], env, tmp_path)["url"]
    assert shown == analytics_url(settings)
    assert "rag_analyst" in shown and "***" in shown
    password = psycopg.conninfo.conninfo_to_dict(target.url).get("password")
    assert password and str(password) not in shown
