"""The dbt audit project builds against a real database and its marts add up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rag_core.cli.dbt_commands import run_dbt
from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.query.audit import AuditLog, AuditRecord


@pytest.mark.slow
def test_dbt_build_produces_tenant_daily_usage(
        settings: Settings, db: Database, make_tenant: Callable[[], TenantId],
        admin_conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    tenant = make_tenant()
    audit = AuditLog(db, tmp_path / "spool", hash_key=b"k" * 32)
    records = [
        AuditRecord(tenant_id=tenant, kind="batch", prompt_tokens=999),
        AuditRecord(tenant_id=tenant, kind="sub_query", prompt_tokens=80, completion_tokens=20,
                    latency_ms={"total": 10.0}, cache_hit=True),
        AuditRecord(tenant_id=tenant, kind="sub_query", prompt_tokens=250,
                    completion_tokens=50, latency_ms={"total": 30.0},
                    error_code=ErrorCode.LLM_ERROR, retries=2),
        AuditRecord(tenant_id=tenant, kind="query", prompt_tokens=70, completion_tokens=30,
                    latency_ms={"total": 20.0}),
    ]
    assert audit.write(records)
    assert run_dbt(settings, ["build", "--quiet"]) == 0
    row = admin_conn.execute(
        "SELECT sum(questions), sum(total_tokens), sum(llm_retries), "
        "       round(avg(cache_hit_ratio)::numeric, 4), round(avg(error_rate)::numeric, 4) "
        "  FROM rag_analytics.tenant_daily_usage WHERE tenant_id = %s", [tenant]).fetchone()
    assert row is not None
    questions, tokens, retries, hit_ratio, error_rate = row
    assert (questions, tokens, retries) == (3, 500, 2)  # the batch envelope is not a question
    assert (float(hit_ratio), float(error_rate)) == (round(1 / 3, 4), round(1 / 3, 4))


def test_the_marts_accept_exactly_the_typed_error_codes() -> None:
    import yaml

    from rag_core.config import resource_dir

    marts = yaml.safe_load((resource_dir("dbt") / "models" / "marts" / "_marts.yml").read_text())
    fct = next(m for m in marts["models"] if m["name"] == "fct_questions")
    column = next(c for c in fct["columns"] if c["name"] == "error_code")
    accepted = column["data_tests"][0]["accepted_values"]["arguments"]["values"]
    assert accepted == [code.value for code in ErrorCode]
