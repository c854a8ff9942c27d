"""``rag rollout demo`` end to end on a database of its own: generated traffic through the
real query path against the fake LLM; the healthy flag reaches 100 %, the faulty one (a
prompt version the LLM fails on) is rolled back at its first stage by the error-rate gate,
with both cohorts' values; the demo's tenants are gone afterwards. Twelve tenants leave a
flag's 5 % stage empty about half the time, so the demo's adding a tenant to an empty first
stage runs in most runs of this test."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from evaluations.rollout.demo import DemoConfig, run_rollout_demo
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets


@pytest.mark.slow
def test_the_demo_completes_one_rollout_and_rolls_the_other_back(
        create_database: Callable[[str], Settings]) -> None:
    settings = create_database("demo")
    result = run_rollout_demo(settings, DemoConfig(tenants=12, docs_per_tenant=2, soak_s=1.0,
                                                   min_requests=10))
    healthy, faulty = result["healthy"], result["faulty"]
    assert result["tenants"] >= 12
    assert (healthy["outcome"], healthy["final_percentage"]) == ("complete", 100)
    assert healthy["stages_passed"] == [5, 25, 50]
    assert all(d["action"] in ("hold", "advance", "complete") for d in healthy["decisions"])
    assert (faulty["outcome"], faulty["final_percentage"]) == ("rolled_back", 0)
    assert faulty["failed_gate"] == "error_rate" and faulty["stages_passed"] == []
    assert faulty["canary"]["error_rate"] > 0.5 and faulty["canary"]["requests"] >= 1
    assert faulty["control"]["error_rate"] == 0.0 and faulty["control"]["requests"] >= 1
    assert [e["action"] for e in faulty["history"]][-1] == "rollback"
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        left = conn.execute("SELECT count(*) FROM rag.tenants WHERE display_name = "
                            "'rollout demo'").fetchone()
    assert left == (0,)
