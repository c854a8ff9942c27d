"""The ``analytics`` flow in the Prefect harness: ``dbt build`` then the marts' checkpoint.
Over audit rows one of which is bad (negative tokens, an unknown error code), the dbt build
fails, the checkpoint fails naming the expectation, the column and the offending row, and the
flow run fails with that summary, its artifacts listing the failing rows; ``rag analytics
check`` fails the same way (data_quality_failed). The deployment's trigger fires on a
completed ingest or batch-query run and on nothing else."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml  # type: ignore[import-untyped]
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows import _resources
from flows.analytics import AnalyticsParameters, analytics
from rag_core.codes import ErrorCode
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.errors import DataQualityError
from rag_core.ops import services
from rag_core.query.audit import AuditLog, AuditRecord
from rag_testing.serve_process import rag_command
from tests.cli.test_failures import assert_one_line_failure
from tests.conftest import REPO_ROOT, cli_environment

BAD_REQUEST = uuid.uuid4()


@pytest.fixture(scope="module")
def bad_settings(create_database: Callable[[str], Settings],
                 tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private database whose audit log holds good rows and one bad row, written by the
    admin past the application's own validation."""
    settings = create_database("analyticsflow")
    services.upgrade_database(settings)
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="analytics")
    database = services.open_database(settings)
    try:
        audit = AuditLog(database, tmp_path_factory.mktemp("spool"), hash_key=b"k" * 32)
        assert audit.write([AuditRecord(tenant_id=tenant, kind="query", prompt_tokens=50,
                                        completion_tokens=10, latency_ms={"total": 12.0})])
    finally:
        database.close()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rag.audit_log (tenant_id, request_id, kind, occurred_at, "
            "  prompt_tokens, completion_tokens, latency_ms, error_code) "
            "VALUES (%s, %s, 'query', %s, -5, 3, '{\"total\": 7.0}', 'no_such_code')",
            [tenant, BAD_REQUEST, datetime.now(UTC)])
    return settings.model_copy(update={"reports_dir": tmp_path_factory.mktemp("reports")})


@pytest.fixture()
def bad_platform(bad_settings: Settings, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Platform]:
    platform = Platform(bad_settings, start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)
    yield platform
    platform.close()


def _assert_names_the_bad_row(text: str) -> None:
    assert "fct_questions.prompt_tokens: expect_column_values_to_be_between" in text, text
    assert "prompt_tokens=-5" in text, text
    assert "fct_questions.error_code: expect_column_values_to_be_in_set" in text, text
    assert "error_code='no_such_code'" in text, text
    assert f"request_id='{BAD_REQUEST}'" in text, text


@pytest.mark.slow
def test_a_bad_audit_row_fails_the_build_the_checkpoint_the_flow_run_and_the_command(
        prefect_harness: None, bad_platform: Platform, bad_settings: Settings,
        tmp_path: Path) -> None:
    state = analytics(AnalyticsParameters(), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataQualityError)
    assert str(error).startswith("dbt build failed (exit 1); data quality check failed")
    _assert_names_the_bad_row(str(error))
    assert state.message is not None
    _assert_names_the_bad_row(state.message)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in artifacts}
    markdown = str(by_key["analytics-data-quality"].data)
    assert "**failed**" in markdown and "fct_questions.error_code" in markdown
    rows = json.loads(str(by_key["analytics-failing-rows"].data))
    failing = {(r["mart"], r["column"]): r for r in rows}
    assert failing["fct_questions", "prompt_tokens"]["failing_rows"] == 1
    assert "prompt_tokens=-5" in failing["fct_questions", "prompt_tokens"]["sample"]
    assert str(BAD_REQUEST) in failing["fct_questions", "error_code"]["sample"]
    assert (bad_settings.reports_dir / "gx" / "index.html").is_file()  # type: ignore[operator]

    # The command, on the marts the flow built (the checkpoint alone, as an analyst runs it).
    env = cli_environment(RAG_STATE_DIR=str(bad_settings.state_dir),
                          RAG_EMBEDDED_DATABASE=bad_settings.embedded_database,
                          RAG_REPORTS_DIR=str(tmp_path))
    done = subprocess.run([*rag_command(), "analytics", "check", "--mart", "fct_questions",
                           "--json"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    line, payload = assert_one_line_failure(done, ErrorCode.DATA_QUALITY_FAILED)
    assert payload is not None
    _assert_names_the_bad_row(payload["message"])
    _assert_names_the_bad_row(line)
    assert (tmp_path / "gx" / "index.html").is_file()


def _received_event(deployment: str, event: str) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    run, flow_id, deployment_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    return ReceivedEvent(
        occurred=datetime.now(UTC), event=event,
        resource={"prefect.resource.id": f"prefect.flow-run.{run}",
                  "prefect.resource.name": "some-run"},
        related=[{"prefect.resource.id": f"prefect.flow.{flow_id}",
                  "prefect.resource.role": "flow", "prefect.resource.name": "some-flow"},
                 {"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                  "prefect.resource.role": "deployment",
                  "prefect.resource.name": deployment}],
        id=uuid.uuid4())


def test_the_deployment_runs_after_ingest_and_batch_query_runs_complete() -> None:
    from prefect.events import DeploymentTriggerTypes
    from prefect.server.events.schemas.automations import EventTrigger
    from pydantic import TypeAdapter

    document = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    [deployment] = [d for d in document["deployments"] if d["name"] == "analytics"]
    assert deployment["concurrency_limit"] == 1
    assert any(s.get("active") for s in deployment["schedules"])
    [spec] = deployment["triggers"]
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(
        {**spec, "name": "analytics__automation_1"})
    trigger.set_deployment_id(uuid.uuid4())
    served = EventTrigger.model_validate(
        trigger.as_automation().trigger.model_dump(mode="json"))
    assert served.covers(_received_event("ingest", "prefect.flow-run.Completed"))
    assert served.covers(_received_event("batch-query", "prefect.flow-run.Completed"))
    assert not served.covers(_received_event("ingest", "prefect.flow-run.Failed"))
    assert not served.covers(_received_event("rollout", "prefect.flow-run.Completed"))
    assert not served.covers(_received_event("analytics", "prefect.flow-run.Completed"))
