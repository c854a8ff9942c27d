"""The coverage gate of an embedding rollout over a real database: a tenant the flag
reaches without the key's vectors fails it (and the controller rolls back), one the next
stage would add holds it, re-embedding that tenant lets it pass."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator

import pytest

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.config.rollout import RolloutPolicy
from rag_core.db import tenant_admin
from rag_core.db.flag_cohorts import Flag
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.reembed import Reembedding
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.ops.embedding_coverage import GATE_NAME, embedding_coverage_gate
from rag_core.retrieval.vector_store import VectorStore
from tests.ingestion.conftest import scifact_records

KEY = "minilm-cov"


@pytest.fixture(scope="module")
def platform(create_database: Callable[[str], Settings],
             embedder: Embedder) -> Iterator[Platform]:
    settings = create_database("coverage")  # flags are global: a database of our own
    services.upgrade_database(settings)
    with Platform(settings, embedder=embedder, start_services=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def tenants(platform: Platform, embedder: Embedder,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[TenantId, TenantId]:
    """Two tenants of four abstracts; only the first re-embedded under the key."""
    source = tmp_path_factory.mktemp("coverage") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(4, start=4100)))
    with platform.admin_connection() as conn:
        first, second = (tenant_admin.create_tenant(conn, display_name="coverage")
                         for _ in range(2))
    for tenant in (first, second):
        run_ingestion(platform.database, embedder, platform.vector_store, tenant, source)
    _reembed(platform, embedder, first)
    return first, second


def _reembed(platform: Platform, embedder: Embedder, tenant: TenantId) -> None:
    store = VectorStore(platform.database, platform.settings, model_key=KEY)
    Reembedding(platform.database, platform.admin_connection, store, embedder).run(tenant)


def _flag(variant: dict[str, str], *, on: Collection[str] = (),
          off: Collection[str] = ()) -> Flag:
    """At 0 % with one stage left (100 %): reached now only through force_on."""
    return Flag(name="cov", state="rolling", percent=0, stages=(100,), variant=variant,
                salt="00", force_on=frozenset(on), force_off=frozenset(off))


def test_reached_tenants_without_vectors_fail_and_the_next_stages_hold(
        platform: Platform, tenants: tuple[TenantId, TenantId], embedder: Embedder) -> None:
    first, second = tenants
    gate = embedding_coverage_gate(platform.admin_connection)
    variant = {"embedding_model_key": KEY}

    covered = gate(_flag(variant, on={first}, off={second}))
    assert (covered.gate, covered.outcome) == (GATE_NAME, "pass")
    served_from_nothing = gate(_flag(variant, on={second}))
    assert (served_from_nothing.outcome, served_from_nothing.canary) == ("fail", 1.0)
    assert second in served_from_nothing.detail and "chunks" in served_from_nothing.detail
    upcoming = gate(_flag(variant, on={first}))
    assert (upcoming.outcome, upcoming.canary, upcoming.control) == ("hold", 0.0, 1.0)
    assert "rag embeddings reembed" in upcoming.detail
    assert gate(_flag({"retrieval_mode": "hybrid"}, on={second})).outcome == "pass"
    assert embedding_coverage_gate(platform.admin_connection, candidate_key="minilm-l6-v2")(
        _flag({"retrieval_mode": "hybrid"}, on={second})).outcome == "pass"

    # the controller rolls back a rollout that serves a tenant from nothing
    name = "cov-rollout"
    platform.flags.create(name, {"embedding_model_key": KEY}, stages=(5, 100),
                          force_on=[second])
    rollouts = platform.rollouts(RolloutPolicy(min_requests=5, soak_s=1), actor="test")
    rollouts.start(name)
    decision = rollouts.step(name, extra_gates=[gate])
    assert (decision.action, decision.failed_gate) == ("rollback", GATE_NAME)
    assert platform.flags.get(name).state == "rolled_back"

    _reembed(platform, embedder, second)
    assert gate(_flag(variant, on={first})).outcome == "pass"
    assert gate(_flag(variant, on={second})).outcome == "pass"
