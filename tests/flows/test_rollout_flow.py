"""The ``rollout`` flow in the Prefect harness: it soaks and judges each stage until the flag
completes, fails its run with ``rollout_rolled_back`` when a gate fails (the flag at 0 %),
judges once without moving anything in a dry run; and its deployment's parameters are
the flow's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from evaluations.retrieval.quality_gate import QualityGateSpec
from flows import _resources
from flows.rollout import RolloutParameters, rollout
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.errors import PathOutsideRootsError, RolloutRolledBackError
from rag_core.ops import services


@pytest.fixture(scope="module")
def own_settings(create_database: Callable[[str], Settings]) -> Settings:
    """A database of this module's own: flags are global."""
    settings = create_database("rolloutflow")
    services.upgrade_database(settings)
    return settings


@pytest.fixture()
def flow_platform(own_settings: Settings, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Platform]:
    platform = Platform(own_settings, start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)
    yield platform
    platform.close()


class _AuditTraffic:
    """Audit rows tagged with the flag's cohorts, written every 50 ms while the flow runs
    (as the query path of other processes would write them)."""

    def __init__(self, platform: Platform, flag: str, error_code: str | None = None) -> None:
        self._platform, self._flag, self._code = platform, flag, error_code
        with platform.admin_connection() as conn:
            self._tenants = [tenant_admin.create_tenant(conn, display_name="flow")
                             for _ in range(2)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _AuditTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        canary: TenantId
        canary, control = self._tenants
        while not self._stop.wait(0.05):
            with self._platform.admin_connection() as conn:
                for tenant, cohort, code in ((canary, "canary", self._code),
                                             (control, "control", None)):
                    conn.execute(
                        "INSERT INTO rag.audit_log (tenant_id, request_id, kind, latency_ms, "
                        "error_code, rollout_cohort) SELECT %s, gen_random_uuid(), 'query', "
                        "%s::jsonb, %s, %s FROM generate_series(1, 5)",
                        [tenant, json.dumps({"total": 80.0}), code, f"{self._flag}={cohort}"])


@pytest.mark.slow
def test_a_healthy_rollout_completes_stage_by_stage(prefect_harness: None,
                                                    flow_platform: Platform) -> None:
    flow_platform.flags.create("flow-healthy", {"retrieval_mode": "hybrid"},
                               stages=(10, 50, 100))
    with _AuditTraffic(flow_platform, "flow-healthy"):
        summary = rollout(RolloutParameters(flag="flow-healthy", soak_s=0.5, min_requests=5))
    assert (summary["outcome"], summary["final_percentage"]) == ("complete", 100)
    assert summary["stages_passed"] == [10, 50]
    assert flow_platform.flags.get("flow-healthy").state == "complete"


@pytest.mark.slow
def test_a_failed_gate_rolls_back_and_fails_the_run(prefect_harness: None,
                                                    flow_platform: Platform) -> None:
    flow_platform.flags.create("flow-faulty", {"prompt_version": "batch-qa-v2"})
    dry_params = RolloutParameters(flag="flow-faulty", soak_s=0.5, min_requests=5,
                                   dry_run=True)
    with _AuditTraffic(flow_platform, "flow-faulty", error_code="llm_unavailable"):
        flow_platform.rollouts().start("flow-faulty")
        threading.Event().wait(0.6)
        dry = rollout(dry_params)
        assert (dry["outcome"], dry["decisions"][0]["would"]) == ("dry_run", "rollback")
        assert flow_platform.flags.get("flow-faulty").percent == 5  # nothing moved
        with pytest.raises(RolloutRolledBackError) as rolled_back:
            rollout(RolloutParameters(flag="flow-faulty", soak_s=0.5, min_requests=5))
    assert (rolled_back.value.gate, rolled_back.value.percent) == ("error_rate", 5)
    flag = flow_platform.flags.get("flow-faulty")
    assert (flag.state, flag.percent) == ("rolled_back", 0)
    event = flow_platform.flags.history("flow-faulty")[0]
    assert event.action == "rollback" and event.details["failed_gate"] == "error_rate"
    assert event.details["measured"]["canary"]["error_rate"] == 1.0
    assert event.details["measured"]["control"]["error_rate"] == 0.0


def _paused_run(flow_name: str, timeout_s: float = 60.0) -> UUID:
    """The id of the flow run of ``flow_name`` that is paused, once it is."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            named = [r for r in runs if r.name and client.read_flow(r.flow_id).name == flow_name]
            if named:
                return named[0].id
            time.sleep(0.5)
    raise AssertionError(f"no paused run of {flow_name} within {timeout_s} s")


@pytest.mark.slow
def test_approval_between_stages_waits_for_a_person(prefect_harness: None,
                                                    flow_platform: Platform) -> None:
    flow_platform.flags.create("flow-approved", {"retrieval_mode": "hybrid"},
                               stages=(10, 50, 100))
    results: dict[str, Any] = {}
    params = RolloutParameters(flag="flow-approved", soak_s=0.5, min_requests=5,
                               approval=True)
    with _AuditTraffic(flow_platform, "flow-approved"):
        worker = threading.Thread(target=lambda: results.update(rollout(params)))
        worker.start()
        # the first stage passed its gates; the flag stays at 10 % until someone answers
        resume_flow_run(_paused_run("rollout"), run_input={"approved": True,
                                                           "reason": "looks good"})
        run = _paused_run("rollout")  # the next stage asks again
        assert flow_platform.flags.get("flow-approved").percent == 50
        resume_flow_run(run, run_input={"approved": False, "reason": "not today"})
        worker.join(timeout=120)
    assert (results["outcome"], results["final_percentage"]) == ("paused", 50)
    flag = flow_platform.flags.get("flow-approved")
    assert (flag.state, flag.percent) == ("paused", 50)


def test_a_quality_gate_outside_the_source_roots_is_refused_before_anything_moves(
        prefect_harness: None, flow_platform: Platform, tmp_path: Path) -> None:
    flow_platform.flags.create("flow-quality", {"retrieval_mode": "hybrid"})
    spec = QualityGateSpec(tenant="tn_" + "0" * 32, dataset_dir=tmp_path)
    with pytest.raises(PathOutsideRootsError):
        rollout(RolloutParameters(flag="flow-quality", soak_s=0.5, quality_gate=spec))
    assert flow_platform.flags.get("flow-quality").state == "off"
