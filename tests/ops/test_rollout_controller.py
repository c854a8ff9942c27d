"""The canary controller: gates judged on the audit log's cohorts, stages advanced only on
enough traffic, a failed gate rolled back with both cohorts' values in the flag's history,
dry runs that move nothing, moves refused in the wrong state, and one measurement's counts
taken from one snapshot while traffic goes on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.config.rollout import RolloutPolicy
from rag_core.db import tenant_admin
from rag_core.errors import FlagStateError
from rag_core.ops import services
from rag_core.ops.rollout.controller import Rollouts
from rag_core.ops.rollout.gates import CohortStats, GateResult, evaluate_gates
from rag_core.ops.rollout.measure import measure_cohorts

POLICY = RolloutPolicy(min_requests=20, soak_s=1)


def _gates(canary: CohortStats, control: CohortStats, percent: int = 5,
           breaker_open_s: float = 0.0) -> dict[str, GateResult]:
    return {g.gate: g for g in evaluate_gates(canary, control, percent=percent, policy=POLICY,
                                              breaker_open_s=breaker_open_s)}


def test_too_little_traffic_holds_and_judges_nothing_else() -> None:
    gates = _gates(CohortStats(requests=19, p95_ms=9000, cache_hits=0),
                   CohortStats(requests=500, p95_ms=100, cache_hits=400))
    assert gates["min_requests"].outcome == "hold"
    assert set(gates) == {"cross_tenant_rows", "min_requests"}


def test_errors_beyond_what_the_floor_allows_fail_before_the_floor() -> None:
    # min 20 at 0.1 %: one error already exceeds 0.02 errors; at 1 % (later stages) too
    early = _gates(CohortStats(requests=3, error_codes={"llm_unavailable": 1}),
                   CohortStats(requests=3), percent=5)
    assert early["error_rate"].outcome == "fail" and early["min_requests"].outcome == "hold"
    # refused input is not an error of the variant: still only a hold
    refused = _gates(CohortStats(requests=3, error_codes={"rate_limited": 3}),
                     CohortStats(requests=3))
    assert "error_rate" not in refused


def test_error_rate_thresholds_follow_the_stage_and_count_only_service_errors() -> None:
    control = CohortStats(requests=1000, p95_ms=100)
    # 1 service error in 500: 0.2 % fails the first stage (< 0.1 %) and passes later (<= 1 %)
    canary = CohortStats(requests=500, p95_ms=100, error_codes={"llm_unavailable": 1})
    assert _gates(canary, control, percent=5)["error_rate"].outcome == "fail"
    assert _gates(canary, control, percent=25)["error_rate"].outcome == "pass"
    # refusals of the caller (rate limits, bad input) are not the variant's errors
    refused = CohortStats(requests=500, p95_ms=100,
                          error_codes={"rate_limited": 200, "invalid_question": 5})
    assert _gates(refused, control)["error_rate"].canary == 0.0


def test_latency_cache_breaker_quota_and_leak_gates() -> None:
    control = CohortStats(requests=1000, p95_ms=200, cache_hits=600)
    ok = CohortStats(requests=1000, p95_ms=300, cache_hits=200, max_quota_usage=0.5)
    assert all(g.outcome == "pass" for g in _gates(ok, control).values())
    slow = _gates(CohortStats(requests=1000, p95_ms=400), control)  # > 200 * 1.5 + 50
    assert slow["p95_vs_control_ms"].outcome == "fail"
    assert slow["p95_vs_control_ms"].threshold == 350.0
    assert _gates(CohortStats(requests=1000, p95_ms=3100), CohortStats(
        requests=1000, p95_ms=3000))["p95_latency_ms"].outcome == "fail"
    cold = _gates(CohortStats(requests=1000, p95_ms=200, cache_hits=50), control)
    assert cold["cache_hit_ratio"].outcome == "fail"  # 0.05 < 0.6 - 0.5
    assert _gates(ok, control, breaker_open_s=301)["breaker_open_s"].outcome == "fail"
    assert _gates(CohortStats(requests=1000, p95_ms=200, max_quota_usage=0.85),
                  control)["quota_usage"].outcome == "fail"
    leak = _gates(CohortStats(requests=3, cross_tenant_rows=1), control)
    assert leak["cross_tenant_rows"].outcome == "fail"  # judged even on little traffic


# --- over the audit log of a database of this module's own -----------------------------


@pytest.fixture(scope="module")
def platform(create_database: Callable[[str], Settings]) -> Iterator[Platform]:
    settings = create_database("rollout")
    services.upgrade_database(settings)
    with Platform(settings, start_services=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def tenants(platform: Platform) -> list[TenantId]:
    with platform.admin_connection() as conn:
        return [tenant_admin.create_tenant(conn, display_name="rollout") for _ in range(2)]


def _traffic(platform: Platform, flag: str, tenant: TenantId, cohort: str, count: int, *,
             error_code: str | None = None, total_ms: float = 120.0) -> None:
    """Audit rows as the query path writes them, tagged with the cohort."""
    with platform.admin_connection() as conn:
        conn.execute(
            "INSERT INTO rag.audit_log (tenant_id, request_id, kind, model, prompt_version, "
            "latency_ms, error_code, rollout_cohort, prompt_tokens, completion_tokens) "
            "SELECT %s, gen_random_uuid(), 'query', 'm', 'p', %s::jsonb, %s, %s, 100, 20 "
            "FROM generate_series(1, %s)",
            [tenant, json.dumps({"total": total_ms}), error_code, f"{flag}={cohort}", count])


def _flag(platform: Platform, name: str) -> str:
    platform.flags.create(name, {"retrieval_mode": "hybrid"}, stages=(5, 50, 100))
    return name


def _rollouts(platform: Platform) -> Rollouts:
    return platform.rollouts(POLICY, actor="test")


def test_a_healthy_canary_moves_stage_by_stage_to_complete(
        platform: Platform, tenants: list[TenantId]) -> None:
    rollouts, name = _rollouts(platform), _flag(platform, f"healthy-{uuid.uuid4().hex[:6]}")
    assert rollouts.start(name).percent == 5
    held = rollouts.step(name)  # nothing measured yet
    assert held.action == "hold" and platform.flags.get(name).percent == 5
    for expected in (50, 100):
        _traffic(platform, name, tenants[0], "canary", 30)
        _traffic(platform, name, tenants[1], "control", 30)
        decision = rollouts.step(name)
        assert decision.next_percent == expected, decision.as_dict()
        assert decision.measured is not None
        assert decision.measured.canary.requests == 30  # only this stage's window
    flag = platform.flags.get(name)
    assert (flag.state, flag.percent) == ("complete", 100)
    actions = [e.action for e in platform.flags.history(name)]
    assert actions == ["complete", "advance", "gate_held", "start", "create"]


def test_a_failing_canary_is_rolled_back_with_the_evidence(
        platform: Platform, tenants: list[TenantId]) -> None:
    rollouts, name = _rollouts(platform), _flag(platform, f"faulty-{uuid.uuid4().hex[:6]}")
    rollouts.start(name)
    _traffic(platform, name, tenants[0], "canary", 25)
    _traffic(platform, name, tenants[0], "canary", 5, error_code="llm_unavailable")
    _traffic(platform, name, tenants[1], "control", 40)
    dry = rollouts.step(name, dry_run=True)
    assert (dry.action, dry.would, platform.flags.get(name).percent) == ("dry_run",
                                                                         "rollback", 5)
    decision = rollouts.step(name)
    assert (decision.action, decision.failed_gate) == ("rollback", "error_rate")
    flag = platform.flags.get(name)
    assert (flag.state, flag.percent) == ("rolled_back", 0)
    event = platform.flags.history(name)[0]
    assert (event.action, event.reason) == ("rollback", "gate error_rate failed")
    measured = event.details["measured"]
    assert measured["canary"]["requests"] == 30 and measured["canary"]["errors"] == 5
    assert measured["control"]["requests"] == 40 and measured["control"]["errors"] == 0
    with pytest.raises(FlagStateError):
        rollouts.step(name)  # nothing to judge on a rolled-back flag
    assert rollouts.rollback(name, reason="again").state == "rolled_back"  # idempotent
    assert platform.flags.history(name)[0].event_id == event.event_id


def test_pause_holds_and_start_resumes_at_the_same_stage(
        platform: Platform, tenants: list[TenantId]) -> None:
    rollouts, name = _rollouts(platform), _flag(platform, f"paused-{uuid.uuid4().hex[:6]}")
    rollouts.start(name)
    assert rollouts.pause(name).state == "paused"
    _traffic(platform, name, tenants[0], "canary", 30)
    _traffic(platform, name, tenants[1], "control", 30)
    assert rollouts.step(name).action == "hold"  # a paused flag never advances by itself
    assert (rollouts.start(name).state, platform.flags.get(name).percent) == ("rolling", 5)
    forced = rollouts.advance(name, force=True, reason="approved by the on-call")
    assert forced.next_percent == 50
    assert platform.flags.history(name)[0].action == "forced_advance"


def test_a_leak_in_the_canary_rolls_back_at_once(
        platform: Platform, tenants: list[TenantId]) -> None:
    rollouts, name = _rollouts(platform), _flag(platform, f"leak-{uuid.uuid4().hex[:6]}")
    rollouts.start(name)
    _traffic(platform, name, tenants[0], "canary", 1, error_code="cross_tenant_blocked")
    decision = rollouts.step(name)
    assert (decision.action, decision.failed_gate) == ("rollback", "cross_tenant_rows")


def test_cohorts_of_other_flags_are_not_counted(platform: Platform,
                                                tenants: list[TenantId]) -> None:
    rollouts, name = _rollouts(platform), _flag(platform, f"mine-{uuid.uuid4().hex[:6]}")
    rollouts.start(name)
    _traffic(platform, name + "x", tenants[0], "canary", 50, error_code="llm_unavailable")
    with platform.admin_connection() as conn:
        conn.execute("UPDATE rag.audit_log SET rollout_cohort = %s WHERE rollout_cohort = %s",
                     [f"a=canary,{name}=control,z=canary", f"{name}x=canary"])
    measured = rollouts.judge(name).measured
    assert measured is not None
    assert (measured.canary.requests, measured.control.requests) == (0, 50)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), \
            platform.database.unscoped_session() as conn:
        conn.execute("UPDATE rag.feature_flags SET state = 'complete'")


class _WritesAfterFirstRead:
    """The admin connection, with audit rows of other processes landing right after the
    measurement's first read (as traffic does while a stage is judged)."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]],
                 write: Callable[[], None]) -> None:
        self._conn, self._write, self._written = conn, write, False

    def execute(self, query: str, params: object = None) -> object:
        cursor = self._conn.execute(query, params)  # type: ignore[arg-type]
        if not self._written and query.lstrip().upper().startswith("WITH"):
            self._written = True
            self._write()
        return cursor

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_one_measurement_counts_from_one_snapshot_while_traffic_goes_on(
        platform: Platform, tenants: list[TenantId]) -> None:
    name = f"snap-{uuid.uuid4().hex[:6]}"
    since = datetime.now(UTC)
    _traffic(platform, name, tenants[0], "canary", 10, error_code="llm_unavailable")

    @contextmanager
    def admin() -> Iterator[Any]:
        with platform.admin_connection() as conn:
            yield _WritesAfterFirstRead(conn, lambda: _traffic(
                platform, name, tenants[0], "canary", 7, error_code="llm_unavailable"))

    measured = measure_cohorts(admin, name, since, tokens_per_day=10_000)
    # the 7 rows written between its reads are in neither the requests nor the errors
    assert (measured.canary.requests, measured.canary.errors) == (10, 10)
    assert measured.canary.error_rate == 1.0
    assert measure_cohorts(platform.admin_connection, name, since,
                           tokens_per_day=10_000).canary.errors == 17
