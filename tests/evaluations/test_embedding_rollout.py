"""Re-embedding as a versioned rollout, end to end on real data: a golden SciFact tenant
holds its chunks under the served key and under candidate keys (the same embedder, the real
int8 version, a random projection to 48 dimensions); the retrieval-quality gate compares
their nDCG@10 with the baseline's through ``rag eval retrieval``'s code; a rollout of the
worse version through the canary controller is rolled back by that gate and the canary
tenant's retrieval is back on the old key, while a same-quality version completes and the
old vectors are dropped, the new key serving every tenant (then as the default)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evaluations.retrieval.golden import GoldenSet, golden_subset
from evaluations.retrieval.quality_gate import (
    GATE_NAME,
    QualityGateSpec,
    gate_from_spec,
    retrieval_quality_gate,
)
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings, scifact_dir
from rag_core.config.rollout import RolloutPolicy
from rag_core.db import tenant_admin
from rag_core.db.flag_cohorts import Flag
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.model_keys import check_droppable, coverage, drop_vectors
from rag_core.ingestion.reembed import Reembedding
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.projected_embedder import RandomProjectionEmbedder
from tests.ingestion.conftest import scifact_records

DEFAULT_KEY = "minilm-l6-v2"
COPY, INT8, WORSE = "minilm-copy", "minilm-int8", "minilm-rp48"
MAX_DROP = 0.02
# The traffic gates are not what these tests judge: latency margins wide enough that a
# loaded CI machine cannot fail them, and a traffic floor a few questions reach.
POLICY = RolloutPolicy(stages=(5, 100), min_requests=4, soak_s=1, max_p95_regression=20.0,
                       p95_slack_ms=10_000, max_cache_hit_drop=1.0)



@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GoldenSet]:
    """The judged abstracts of SciFact's first 20 test claims and 40 distractors."""
    records, golden = golden_subset(scifact_dir(), queries=20, distractors=40)
    source = tmp_path_factory.mktemp("golden") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    return source, golden


@pytest.fixture(scope="module")
def platform(create_database: Callable[[str], Settings], embedder: Embedder,
             redis_server: EmbeddedRedis) -> Iterator[Platform]:
    """A database of this module's own (flags are global); int8 queries embedded by the
    real backend named in RAG_EMBEDDING_VARIANTS, no LLM (extractive answers)."""
    settings = create_database("embrollout")
    services.upgrade_database(settings)
    configured = settings.model_copy(update={
        "flag_cache_ttl_s": 0.0, "redis_key_prefix": f"er{settings.embedded_database[-8:]}",
        "embedding_variants": {INT8: "fastembed-int8"}})
    with Platform(configured, embedder=embedder, redis_url=redis_server.url(),
                  start_services=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def tenants(platform: Platform, embedder: Embedder,
            golden: tuple[Path, GoldenSet],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[TenantId, TenantId]:
    """The golden tenant (every candidate key re-embedded) and a small other tenant (the
    int8 key only: a rollout that reaches everyone needs everyone re-embedded)."""
    other_source = tmp_path_factory.mktemp("other") / "corpus.jsonl"
    other_source.write_text("".join(json.dumps(r) + "\n"
                                    for r in scifact_records(8, start=4000)))
    with platform.admin_connection() as conn:
        gold = tenant_admin.create_tenant(conn, display_name="golden")
        other = tenant_admin.create_tenant(conn, display_name="other")
    db, settings = platform.database, platform.settings
    run_ingestion(db, embedder, platform.vector_store, gold, golden[0])
    run_ingestion(db, embedder, platform.vector_store, other, other_source)
    worse = RandomProjectionEmbedder(embedder, dimension=48, seed=0)
    int8 = platform.routes.embedder(INT8)
    for key, version, who in ((COPY, embedder, [gold]), (WORSE, worse, [gold]),
                              (INT8, int8, [gold, other])):
        job = Reembedding(db, platform.admin_connection,
                          VectorStore(db, settings, model_key=key), version)
        for tenant in who:
            assert job.run(tenant).missing == 0
    platform.routes.register_embedder(COPY, embedder)
    platform.routes.register_embedder(WORSE, worse)
    return gold, other


def _flag(name: str, key: str) -> Flag:
    return Flag(name=name, state="rolling", percent=5, stages=(5, 100),
                variant={"embedding_model_key": key}, salt="00")


def _key(platform: Platform, tenant: TenantId) -> str:
    """The embedding model key the tenant's questions search now."""
    variant = platform.query_service.route(tenant).variant
    assert variant is not None
    return variant.embedding_model_key


def _retrieved(platform: Platform, tenant: TenantId, question: str) -> list[int]:
    route = platform.query_service.route(tenant)
    return [c.chunk_id for c in route.retriever.retrieve(tenant, question).chunks]


def _traffic(platform: Platform, flag: str, tenant: TenantId, cohort: str,
             count: int) -> None:
    """Audit rows of answered questions in ``cohort``, as the query path writes them."""
    with platform.admin_connection() as conn:
        conn.execute(
            "INSERT INTO rag.audit_log (tenant_id, request_id, kind, model, prompt_version, "
            "latency_ms, rollout_cohort) SELECT %s, gen_random_uuid(), 'query', 'm', 'p', "
            "'{\"total\": 50}'::jsonb, %s FROM generate_series(1, %s)",
            [tenant, f"{flag}={cohort}", count])


def test_the_quality_gate_passes_same_quality_versions_and_fails_a_random_projection(
        platform: Platform, tenants: tuple[TenantId, TenantId],
        golden: tuple[Path, GoldenSet]) -> None:
    gold = tenants[0]
    results = {key: retrieval_quality_gate(platform, gold, golden[1], max_drop=MAX_DROP)(
        _flag(f"to-{key}", key)) for key in (COPY, INT8, WORSE)}
    print({key: r.as_dict() for key, r in results.items()})  # the report's numbers
    baseline = results[COPY].control
    assert baseline is not None and baseline > 0.5  # the served key finds the abstracts
    assert all(r.gate == GATE_NAME and r.control == baseline for r in results.values())
    assert all(r.threshold == round(baseline - MAX_DROP, 5) for r in results.values())
    assert (results[COPY].outcome, results[COPY].canary) == ("pass", baseline)
    assert results[INT8].outcome == "pass"
    int8 = results[INT8].canary
    assert int8 is not None and int8 >= baseline - MAX_DROP
    worse = results[WORSE]
    assert worse.outcome == "fail" and worse.canary is not None
    assert worse.canary < baseline - MAX_DROP
    assert "20 golden queries" in worse.detail

    # a flag that switches no embedding, a key the golden tenant lacks vectors for
    unrelated = Flag(name="hybrid", state="rolling", percent=5, stages=(5, 100),
                     variant={"retrieval_mode": "hybrid"}, salt="00")
    gate = retrieval_quality_gate(platform, gold, golden[1])
    assert gate(unrelated).outcome == "fail"
    partial = retrieval_quality_gate(platform, tenants[1], golden[1], candidate_key=COPY)
    assert "have no vector under 'minilm-copy'" in partial(_flag("x", COPY)).detail

    # the same gate from a flow's parameters (the dataset folder confined to the roots)
    spec = QualityGateSpec(tenant=gold, dataset_dir=scifact_dir(), limit_queries=20,
                           candidate_key=WORSE, max_ndcg_drop=MAX_DROP)
    from_spec = gate_from_spec(platform, spec)(_flag("spec", WORSE))
    assert (from_spec.outcome, from_spec.canary, from_spec.control) == (
        "fail", worse.canary, baseline)


def test_a_worse_version_rolled_out_is_rolled_back_and_the_old_key_keeps_serving(
        platform: Platform, tenants: tuple[TenantId, TenantId],
        golden: tuple[Path, GoldenSet]) -> None:
    gold, other = tenants
    questions = list(golden[1].queries.values())[:6]
    before = _retrieved(platform, gold, questions[0])
    served_vectors = coverage(platform.database, gold, DEFAULT_KEY)
    rollouts = platform.rollouts(POLICY, actor="test")
    name = "embedding-rp48"
    platform.flags.create(name, {"embedding_model_key": WORSE}, stages=(5, 100),
                          force_on=[gold], force_off=[other])
    rollouts.start(name)

    route = platform.query_service.route(gold)
    assert route.variant is not None and route.variant.embedding_model_key == WORSE
    assert route.config.embedding_model.endswith("-rp48s0")
    assert _key(platform, other) == DEFAULT_KEY
    for question in questions:  # real questions of both cohorts, audited with the cohort
        for tenant in tenants:
            assert platform.query_service.ask(tenant, question).error_code is None

    gate = retrieval_quality_gate(platform, gold, golden[1], max_drop=MAX_DROP)
    decision = rollouts.step(name, extra_gates=[gate])

    assert (decision.action, decision.failed_gate) == ("rollback", GATE_NAME), \
        decision.as_dict()
    by_gate = {g.gate: g for g in decision.gates}
    assert by_gate["min_requests"].outcome == "pass"  # the traffic was there, and clean
    assert by_gate["error_rate"].outcome == "pass"
    quality = by_gate[GATE_NAME]
    print("rolled back:", quality.as_dict())
    assert quality.canary is not None and quality.control is not None
    assert quality.canary < quality.control - MAX_DROP
    flag = platform.flags.get(name)
    assert (flag.state, flag.percent) == ("rolled_back", 0)
    event = platform.flags.history(name)[0]
    assert (event.action, event.reason) == ("rollback", f"gate {GATE_NAME} failed")
    recorded = {g["gate"]: g for g in event.details["gates"]}[GATE_NAME]
    assert (recorded["canary"], recorded["control"]) == (quality.canary, quality.control)

    # the canary tenant searches the old key again, which nothing touched
    assert _key(platform, gold) == DEFAULT_KEY
    assert _retrieved(platform, gold, questions[0]) == before
    assert coverage(platform.database, gold, DEFAULT_KEY) == served_vectors
    answer = platform.query_service.ask(gold, questions[0] + " Really?")
    assert answer.error_code is None and answer.sources
    # the rolled-back candidate's vectors may go now (no flag routes to them)
    check_droppable(WORSE, default_key=DEFAULT_KEY, flags=platform.flags.all())
    assert drop_vectors(platform.database, gold, WORSE) == served_vectors.chunks


def test_a_same_quality_version_completes_and_the_old_vectors_are_dropped(
        platform: Platform, tenants: tuple[TenantId, TenantId],
        golden: tuple[Path, GoldenSet], redis_server: EmbeddedRedis) -> None:
    gold, other = tenants
    question = next(iter(golden[1].queries.values()))
    rollouts = platform.rollouts(POLICY, actor="test")
    name = "embedding-int8"
    platform.flags.create(name, {"embedding_model_key": INT8}, stages=(5, 100))
    rollouts.start(name)
    _traffic(platform, name, gold, "canary", 5)
    _traffic(platform, name, other, "control", 5)
    gate = retrieval_quality_gate(platform, gold, golden[1], max_drop=MAX_DROP)

    decision = rollouts.step(name, extra_gates=[gate])

    assert decision.action == "complete", decision.as_dict()
    quality = {g.gate: g for g in decision.gates}[GATE_NAME]
    print("completed:", quality.as_dict())
    assert quality.outcome == "pass"
    flag = platform.flags.get(name)
    assert (flag.state, flag.percent) == ("complete", 100)
    for tenant in tenants:  # everyone is on the new key now
        assert _key(platform, tenant) == INT8

    # finishing at 100 %: the old default's vectors go, the new key serves everyone
    check_droppable(DEFAULT_KEY, default_key=DEFAULT_KEY, flags=platform.flags.all())
    for tenant in tenants:
        chunks = coverage(platform.database, tenant, DEFAULT_KEY).chunks
        assert drop_vectors(platform.database, tenant, DEFAULT_KEY) == chunks
        assert coverage(platform.database, tenant, DEFAULT_KEY).with_vectors == 0
        assert coverage(platform.database, tenant, INT8).missing == 0
    served = _retrieved(platform, gold, question)
    assert len(served) == platform.settings.retrieval_k
    answer = platform.query_service.ask(gold, question + " Is that so?")
    assert answer.error_code is None and answer.sources

    # the operator then makes the new key the default (RAG_EMBEDDING_MODEL_KEY and
    # RAG_EMBEDDING_BACKEND): with the flag turned off, a process so configured serves it
    platform.flags.transition(name, state="off", percent=0, action="retire", actor="test",
                              reason="the new key is the default")
    switched = platform.settings.model_copy(update={"embedding_model_key": INT8,
                                                    "embedding_backend": "fastembed-int8"})
    with Platform(switched, database=platform.database, redis_url=redis_server.url(),
                  start_services=False) as restarted:
        assert _key(restarted, gold) == INT8
        assert _retrieved(restarted, gold, question) == served
