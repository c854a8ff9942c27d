"""The marts' data quality checks over a real database: the dbt marts built from real audit
rows pass every expectation and render data docs; a mart row that breaks them (negative
tokens, an unknown error code, a malformed tenant id, an impossible latency) fails the
checkpoint, which names the expectation, the column and the offending rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest

from rag_core.cli.dbt_commands import run_dbt
from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TENANT_ID_REGEX
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.errors import DataQualityError
from rag_core.ops import services
from rag_core.ops.analytics import (
    QualityLimits,
    check_marts,
    mart_suites,
    raise_on_failure,
)
from rag_core.query.audit import AuditLog, AuditRecord


@pytest.fixture(scope="module")
def built(create_database: Callable[[str], Settings],
          tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private database (the bad-row test writes into its marts) with the marts built
    by dbt over a few real audit rows."""
    settings = create_database("analytics")
    services.upgrade_database(settings)
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="analytics")
    database = services.open_database(settings)
    try:
        audit = AuditLog(database, tmp_path_factory.mktemp("spool"), hash_key=b"k" * 32)
        assert audit.write([
            AuditRecord(tenant_id=tenant, kind="batch", prompt_tokens=90),
            AuditRecord(tenant_id=tenant, kind="sub_query", prompt_tokens=80,
                        completion_tokens=20, latency_ms={"total": 10.0, "llm": 8.0},
                        cache_hit=False, rollout_cohort="hybrid-retrieval=canary"),
            AuditRecord(tenant_id=tenant, kind="query", prompt_tokens=70, completion_tokens=30,
                        latency_ms={"total": 20.0, "search": 3.5},
                        error_code=ErrorCode.LLM_ERROR, retries=2),
            AuditRecord(tenant_id=tenant, kind="query", latency_ms={"total": 1.0},
                        cache_hit=True),
        ])
    finally:
        database.close()
    assert run_dbt(settings, ["build", "--quiet"]) == 0
    return settings.model_copy(update={"reports_dir": tmp_path_factory.mktemp("reports")})


def test_the_suites_take_their_values_from_the_code() -> None:
    [fct] = [s for s in mart_suites(QualityLimits(max_latency_ms=1000)) if
             s.mart == "fct_questions"]
    kwargs = {(e.kind, e.columns): e.kwargs for e in fct.expectations}
    assert kwargs[("ExpectColumnValuesToBeInSet", ("error_code",))]["value_set"] == \
        [code.value for code in ErrorCode]
    assert kwargs[("ExpectColumnValuesToMatchRegex", ("tenant_id",))]["regex"] == \
        TENANT_ID_REGEX
    assert kwargs[("ExpectColumnValuesToBeBetween", ("latency_total_ms",))]["max_value"] == 1000
    assert kwargs[("ExpectColumnValuesToBeBetween", ("prompt_tokens",))]["min_value"] == 0


def test_the_latency_bound_follows_the_llm_timeout_and_retries(built: Settings) -> None:
    limits = QualityLimits.from_settings(built)
    assert limits.max_latency_ms == 2 * built.llm.timeout_s * built.retry.attempts * 1000


def test_marts_built_from_real_audit_rows_pass_and_render_data_docs(built: Settings) -> None:
    report = raise_on_failure(check_marts(built))
    assert report.success and report.failures == [] and report.missing == []
    marts = {m.mart: m for m in report.marts}
    assert marts["fct_questions"].rows == 3  # the batch envelope is not a question
    assert all(m.expectations for m in report.marts)
    assert report.data_docs == built.reports_dir / "gx" / "index.html"  # type: ignore[operator]
    assert report.data_docs.is_file()
    assert "fct_questions" in report.data_docs.read_text(encoding="utf-8")
    pages = list((report.data_docs.parent / "validations").rglob("*.html"))
    assert len(pages) == len(report.marts)
    # Rendered again: the site is replaced, not piled up.
    again = check_marts(built, marts=["fct_questions"])
    assert again.data_docs is not None and [m.mart for m in again.marts] == ["fct_questions"]
    assert len(list((again.data_docs.parent / "validations").rglob("*.html"))) == 1


def test_mart_rows_that_break_the_rules_fail_the_checkpoint_naming_them(
        built: Settings) -> None:
    """Rows the database would never produce from the audit log, written into the mart by
    the admin (and removed again): each breaks its expectation, named with its row."""
    bad = {"tn_NOT-A-TENANT": "tenant", "tn_" + "a" * 32: "latency",
           "tn_" + "b" * 32: "cohort"}
    ids = {what: str(uuid.uuid4()) for what in bad.values()}
    with psycopg.connect(resolve_targets(built).admin_url, autocommit=True) as conn:
        for tenant, what in bad.items():
            conn.execute(
                "INSERT INTO rag_analytics.fct_questions (request_id, tenant_id, occurred_at, "
                "  occurred_on, kind, prompt_tokens, completion_tokens, total_tokens, "
                "  latency_total_ms, rollout_cohort, retries) "
                "VALUES (%s, %s, now(), current_date, 'query', 1, 1, 2, %s, %s, 0)",
                [ids[what], tenant, 10 ** 9 if what == "latency" else 5.0,
                 "hybrid=cantary" if what == "cohort" else "none"])
        try:
            report = check_marts(built, docs=False, marts=["fct_questions"])
        finally:
            conn.execute("DELETE FROM rag_analytics.fct_questions WHERE request_id = ANY(%s)",
                         [list(ids.values())])
    assert not report.success
    failed = {(f.columns, f.expectation): f for f in report.failures}
    assert set(failed) == {
        (("tenant_id",), "expect_column_values_to_match_regex"),
        (("latency_total_ms",), "expect_column_values_to_be_between"),
        (("rollout_cohort",), "expect_column_values_to_match_regex")}
    tenant = failed[("tenant_id",), "expect_column_values_to_match_regex"]
    assert tenant.rows == ({"request_id": ids["tenant"], "tenant_id": "tn_NOT-A-TENANT"},)
    assert (tenant.unexpected_count, tenant.checked_rows) == (1, 6)
    latency = failed[("latency_total_ms",), "expect_column_values_to_be_between"]
    assert latency.rows[0]["request_id"] == ids["latency"]
    with pytest.raises(DataQualityError) as raised:
        raise_on_failure(report)
    assert raised.value.code is ErrorCode.DATA_QUALITY_FAILED
    message = str(raised.value)
    assert message.startswith("data quality check failed: 3 of ")
    assert "fct_questions.rollout_cohort: expect_column_values_to_match_regex" in message
    assert f"request_id='{ids['cohort']}', rollout_cohort='hybrid=cantary'" in message
