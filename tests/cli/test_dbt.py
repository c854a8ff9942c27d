"""The dbt project builds against a real database as the analytics role, its marts add up,
a bad audit row fails the build in a test, its docs are generated offline and its SQL keeps
the style (sqlfluff with the dbt templater, which compiles against the database).

Each build runs in a private database (audit rows of other tests' deleted tenants would
change the numbers) with a private target path (other sessions may run dbt at the same time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from rag_core.cli.dbt_commands import dbt_environment, run_dbt
from rag_core.codes import ErrorCode
from rag_core.composition import Platform
from rag_core.config import Settings, resource_dir
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.feature_flags import FlagStore
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.query.audit import AuditLog, AuditRecord
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment
from tests.ingestion.conftest import scifact_records

DBT_DIR = resource_dir("dbt")
MODEL = "llama-3.1-8b-instant"  # priced in seeds/model_prices.csv: 0.05 / 0.08 USD per 1M


def migrated(create_database: Callable[[str], Settings]) -> Settings:
    settings = create_database("dbt")
    services.upgrade_database(settings)
    return settings


def dbt_args(command: str, tmp_path: Path) -> list[str]:
    return [command, "--quiet", "--target-path", str(tmp_path / "target"),
            "--log-path", str(tmp_path / "logs")]


def rows(conn: psycopg.Connection[Any], sql: str, *params: object) -> list[tuple[Any, ...]]:
    return conn.execute(sql, list(params)).fetchall()


@pytest.fixture()
def private(create_database: Callable[[str], Settings]) -> Iterator[
        tuple[Settings, Database, psycopg.Connection[Any]]]:
    settings = migrated(create_database)
    database = services.open_database(settings)
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        yield settings, database, conn
    database.close()


@pytest.mark.slow
def test_dbt_build_as_the_analytics_role_and_the_marts_add_up(
        private: tuple[Settings, Database, psycopg.Connection[Any]], embedder: Embedder,
        write_jsonl: Callable[..., Path], tmp_path: Path) -> None:
    settings, db, conn = private
    tenant, gone = (tenant_admin.create_tenant(conn, display_name=n) for n in ("a", "gone"))
    audit = AuditLog(db, tmp_path / "spool", hash_key=b"k" * 32)
    flags = FlagStore(db, admin=lambda: psycopg.connect(resolve_targets(settings).admin_url))
    flags.create("hybrid-v2", {"retrieval_mode": "hybrid"}, stages=(5, 25, 100))
    flags.transition("hybrid-v2", state="rolling", percent=5, action="start", actor="t",
                     reason="t")
    call_a, call_b, batch = (str(uuid.uuid4()) for _ in range(3))

    def question(kind: Literal["query", "sub_query"] = "query", **values: Any) -> AuditRecord:
        return AuditRecord(tenant_id=tenant, kind=kind, **({"model": MODEL} | values))

    assert audit.write([
        AuditRecord(tenant_id=tenant, kind="batch", request_id=batch, batch_id=batch,
                    prompt_tokens=999),
        # one batch of three questions over two LLM calls
        question("sub_query", parent_request_id=batch, batch_id=call_a, prompt_tokens=600_000,
                 completion_tokens=100_000, latency_ms={"total": 10.0, "llm": 8.0}),
        question("sub_query", parent_request_id=batch, batch_id=call_a, prompt_tokens=400_000,
                 completion_tokens=100_000, latency_ms={"total": 20.0, "llm": 9.0},
                 rollout_cohort="hybrid-v2=canary", error_code=ErrorCode.LLM_ERROR),
        question("sub_query", parent_request_id=batch, batch_id=call_b, prompt_tokens=0,
                 latency_ms={"total": 40.0, "llm": 30.0, "cache": 1.0},
                 rollout_cohort="hybrid-v2=control"),
        question(latency_ms={"total": 30.0, "cache": 1.0}, cache_hit=True,
                 rollout_cohort="hybrid-v2=control"),
        question(model=None, error_code=ErrorCode.RATE_LIMITED, latency_ms={"total": 1.0}),
        question(model=None, error_code=ErrorCode.QUOTA_EXCEEDED, latency_ms={"total": 2.0}),
        question(model="a-model-without-a-price", prompt_tokens=10, latency_ms={"total": 5.0}),
    ])
    flags.transition("hybrid-v2", state="rolling", percent=25, action="advance", actor="t",
                     reason="t")
    # a question for a deleted tenant is refused, and audited under the tenant's id
    tenant_admin.delete_tenant(conn, gone)
    assert audit.write([question(latency_ms={"total": 50.0}, rollout_cohort="hybrid-v2=canary"),
                        AuditRecord(tenant_id=gone, kind="query", latency_ms={"total": 1.0},
                                    error_code=ErrorCode.UNKNOWN_TENANT)])
    good = scifact_records(2)
    store = Platform(settings, database=db, start_services=False).vector_store
    run_ingestion(db, embedder, store, tenant,
                  write_jsonl([good[0], b'{"_id": "broken", "text": ', good[1]]))
    conn.execute("INSERT INTO rag.benchmark_runs (benchmark, dataset, config, metrics, "
                 "started_at) VALUES ('answers', 'scifact', %s, %s, now())",
                 [Jsonb({"prompt_version": "v2", "model": MODEL, "retrieval_mode": "hybrid",
                         "embedding_model_key": "minilm-l6-v2", "answerer": "llm"}),
                  Jsonb({"faithfulness": 0.75})])

    assert run_dbt(settings, dbt_args("build", tmp_path)) == 0

    # tokens summed and priced from the seed: (1e6 x 0.05 + 2e5 x 0.08) / 1e6; the unpriced
    # model's cost is unknown, not 0
    assert rows(conn, "SELECT model, prompt_tokens, completion_tokens, cost_usd, price_known "
                      "FROM rag_analytics.token_cost_daily WHERE tenant_id = %s ORDER BY model",
                tenant) == [("a-model-without-a-price", 10, 0, None, False),
                            (MODEL, 1_000_000, 200_000, pytest.approx(0.066), True),
                            ("none", 0, 0, 0.0, False)]
    assert rows(conn, "SELECT questions, sub_questions, batches FROM rag_analytics.questions_daily "
                      "WHERE tenant_id = %s", tenant) == [(8, 3, 1)]
    # percentiles of the llm stage over 8, 9, 30 ms (continuous)
    assert rows(conn, "SELECT requests, p50_ms, p95_ms FROM rag_analytics.latency_daily "
                      "WHERE stage = 'llm'") == [(3, 9.0, pytest.approx(27.9))]
    assert rows(conn, "SELECT llm_calls, questions_answered, calls_saved "
                      "FROM rag_analytics.llm_batching_daily") == [(2, 3, 1)]
    assert rows(conn, "SELECT rate_limited, quota_exceeded "
                      "FROM rag_analytics.limit_rejections_daily WHERE tenant_id = %s",
                tenant) == [(1, 1)]
    assert rows(conn, "SELECT error_code, errors FROM rag_analytics.errors_by_code_daily "
                      "ORDER BY error_code") == [("llm_error", 1), ("quota_exceeded", 1),
                                                  ("rate_limited", 1), ("unknown_tenant", 1)]
    # the cohort label split per flag, each question at the stage in force when it was asked
    assert rows(conn, "SELECT stage_percent, cohort, questions, error_rate, "
                      "error_rate_minus_control FROM rag_analytics.rollout_cohort_health "
                      "WHERE flag_key = 'hybrid-v2' ORDER BY stage_percent, cohort") == [
        (5, "canary", 1, 1.0, 1.0), (5, "control", 2, 0.0, None), (25, "canary", 1, 0.0, None)]
    assert rows(conn, "SELECT tenant_id, is_deleted FROM rag_analytics.dim_tenants "
                      "ORDER BY is_deleted") == [(tenant, False), (gone, True)]
    assert rows(conn, "SELECT jobs, records_read, documents_ingested, rejected_records "
                      "FROM rag_analytics.ingestion_throughput_daily") == [(1, 3, 2, 1)]
    assert rows(conn, "SELECT reason, rejections FROM rag_analytics.ingestion_rejections") == [
        ("malformed_record", 1)]
    assert rows(conn, "SELECT benchmark, model, retrieval_mode, embedding_version, answerer "
                      "FROM rag_analytics.benchmark_history") == [
        ("answers", MODEL, "hybrid", "minilm-l6-v2", "llm")]
    assert rows(conn, "SELECT metric, score FROM rag_analytics.benchmark_metrics") == [
        ("faithfulness", 0.75)]
    # the old mart still says what it said
    assert rows(conn, "SELECT questions, total_tokens, cost_usd "
                      "FROM rag_analytics.tenant_daily_usage WHERE tenant_id = %s",
                tenant) == [(8, 1_200_010, None)]

    # a second run is incremental and changes nothing
    assert run_dbt(settings, [*dbt_args("run", tmp_path), "--select", "fct_questions"]) == 0
    assert rows(conn, "SELECT count(*) FROM rag_analytics.fct_questions") == [(9,)]

    # `rag dbt docs generate`: the docs under the reports folder, generated offline
    reports = tmp_path / "reports"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "rag"), "dbt", "docs", "generate", "--quiet",
         "--target-path", str(tmp_path / "target")],
        env=cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                            RAG_EMBEDDED_DATABASE=settings.embedded_database,
                            RAG_REPORTS_DIR=str(reports)),
        capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    docs = reports / "dbt-docs"
    assert {p.name for p in docs.iterdir()} >= {"index.html", "static_index.html",
                                                "manifest.json", "catalog.json"}
    manifest = json.loads((docs / "manifest.json").read_text())
    assert manifest["metadata"]["send_anonymous_usage_stats"] is False  # no tracker loads
    catalog = json.loads((docs / "catalog.json").read_text())
    assert "model.rag_audit.token_cost_daily" in catalog["nodes"]


@pytest.mark.slow
def test_a_bad_audit_row_fails_the_build_in_a_test(
        private: tuple[Settings, Database, psycopg.Connection[Any]], tmp_path: Path) -> None:
    settings, _, conn = private
    tenant = tenant_admin.create_tenant(conn, display_name="bad")
    # The table has no CHECK on tokens or codes (the application writes only good ones); the
    # admin can insert what a bug might.
    conn.execute("INSERT INTO rag.audit_log (tenant_id, request_id, kind, prompt_tokens, "
                 "error_code) VALUES (%s, %s, 'query', -5, NULL), (%s, %s, 'query', 1, "
                 "'no_such_code')", [tenant, uuid.uuid4(), tenant, uuid.uuid4()])
    assert run_dbt(settings, [*dbt_args("build", tmp_path), "--select", "+fct_questions"]) != 0
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    failed = {r["unique_id"].split(".")[2] for r in results if r["status"] == "fail"}
    assert any(name.startswith("non_negative_fct_questions") for name in failed), failed
    assert any(name.startswith("accepted_values_fct_questions") for name in failed), failed


@pytest.mark.slow
def test_the_sql_keeps_the_style(create_database: Callable[[str], Settings],
                                 tmp_path: Path) -> None:
    """sqlfluff (postgres dialect, dbt templater: .sqlfluff) over every model."""
    settings = migrated(create_database)
    env = dbt_environment(settings) | {"DBT_TARGET_PATH": str(tmp_path / "target"),
                                       "DBT_LOG_PATH": str(tmp_path / "logs")}
    sqlfluff = Path(sys.executable).parent / "sqlfluff"
    result = subprocess.run([str(sqlfluff), "lint", "dbt/models"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _schemas() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(DBT_DIR.glob("models/**/*.yml"))]


def test_the_marts_accept_exactly_the_typed_error_codes() -> None:
    models = {m["name"]: m for doc in _schemas() for m in doc.get("models", [])}
    codes = [code.value for code in ErrorCode]
    for name in ("fct_questions", "errors_by_code_daily"):
        column = next(c for c in models[name]["columns"] if c["name"] == "error_code")
        accepted = next(t["accepted_values"] for t in column["data_tests"]
                        if isinstance(t, dict) and "accepted_values" in t)
        assert accepted["arguments"]["values"] == codes, name


def test_every_model_and_column_is_described() -> None:
    models = {m["name"]: m for doc in _schemas() for m in doc.get("models", [])}
    assert set(models) == {p.stem for p in DBT_DIR.glob("models/**/*.sql")}
    for name, model in models.items():
        assert model.get("description"), name
        for column in model.get("columns", []):
            assert column.get("description"), f"{name}.{column['name']}"


def test_every_mart_has_data_tests() -> None:
    for doc in _schemas():
        for model in doc.get("models", []):
            tests = list(model.get("data_tests", [])) + [
                t for c in model.get("columns", []) for t in c.get("data_tests", [])]
            assert tests, model["name"]

