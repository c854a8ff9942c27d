"""``rag bench index`` at its smallest: a few thousand vectors, a couple of strategies, on the
test server in a scratch database of its own. The report must be well formed (every key,
every tenant, recall in [0, 1]) and DiskANN must say "not installed" where the server has no
vectorscale. Timing is never asserted (the suite shares 2 cores)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import typer
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from evaluations.cli import bench_index
from evaluations.index.config import NOT_INSTALLED, IndexBenchConfig
from evaluations.index.context import BenchContext, StrategyResult
from evaluations.index.data import Dataset, DataSpec, TenantData, recall_at_k
from evaluations.index.database import create_bench_database, vectorscale_status
from evaluations.index.judging import best_function_config, compose_candidates
from evaluations.index.measure import CellResult
from evaluations.index.stages import run_index_benchmark
from evaluations.index.strategies import Strategy
from evaluations.index.vectors import K, fit_mixture, ground_truth, normalise
from rag_core.config import Settings, get_settings
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.embeddings.base import Embedder
from rag_core.errors import BenchmarkError
from tests.conftest import TEST_STATE_DIR, make_settings

CELL_KEYS = {"recall_at_10", "p50_ms", "p95_ms", "qps_1", "qps_2", "queries", "plan",
             "cpu_p50_ms", "cpu_p95_ms", "loadavg_1m"}


def tiny_config(**overrides: Any) -> IndexBenchConfig:
    values: dict[str, Any] = dict(
        vectors=3000, queries_per_tenant=3, real_chunks=60, clusters=4,
        phases=("exact", "product", "hnsw", "diskann"), hnsw_ef=(100,),
        hnsw_modes=("off", "relaxed_order"), product_ef=(100,), min_queries=1,
        cell_budget_s=2.0, database=f"bench_index_{secrets.token_hex(4)}")
    values.update(overrides)
    return IndexBenchConfig.quick(**values)


def _database_exists(server: EmbeddedPostgres, name: str) -> bool:
    with psycopg.connect(server.admin_url("postgres")) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            [name]).fetchone() is not None


@pytest.fixture(scope="module")
def outcome(pg_server: EmbeddedPostgres, embedder: Embedder,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path, str]:
    reports = tmp_path_factory.mktemp("reports")
    config = tiny_config()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_REPORTS_DIR", str(reports))  # never write into the repository
        result = run_index_benchmark(make_settings(), config, embedder)
    stored = json.loads((result.folder / "results.json").read_text())
    return stored, result.folder, reports, config.database


@pytest.mark.slow
def test_report_is_well_formed(outcome: tuple[dict[str, Any], Path, Path, str]) -> None:
    stored, folder, reports, _ = outcome
    assert folder.parent == reports / "index"
    names = {p.name for p in folder.iterdir()}
    assert {"report.md", "results.json", "recall_latency_all_tenants.png"} <= names
    assert (folder / "recall_latency_all_tenants.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stored["benchmark"] == "index"
    results = stored["results"]
    assert isinstance(results["default_meets_goal"], bool)
    assert isinstance(results["default_meets_goal_wall_clock"], bool)
    # the goal is judged on wall-clock latency unless the config asks for backend CPU time
    assert results["latency_basis"] == "wall"
    tenants = [t["name"] for t in results["tenants"]]
    assert len(tenants) == 5
    assert [t["rows"] for t in results["tenants"]] == [30, 150, 300, 1020, 1500]
    strategies = results["strategies"]
    assert {"exact_btree", "exact_topk_then_join", "exact_join_all_then_topk",
            "product_default", "product_forced_exact",
            "product_forced_hnsw_ef100", "hnsw_ef100_off", "hnsw_ef100_relaxed_order"} \
        <= strategies.keys()
    for sid, strategy in strategies.items():
        assert {"build_s", "index_mb", "tenants", "family", "params"} <= strategy.keys(), sid
        assert set(strategy["tenants"]) == set(tenants), sid
        for tenant, cell in strategy["tenants"].items():
            assert cell.keys() >= CELL_KEYS, (sid, tenant)
            assert 0.0 <= cell["recall_at_10"] <= 1.0, (sid, tenant)
            assert 0 < cell["p50_ms"] <= cell["p95_ms"], (sid, tenant)
            assert cell["qps_1"] > 0 and cell["qps_2"] > 0, (sid, tenant)
            assert 0 <= cell["cpu_p50_ms"] <= cell["cpu_p95_ms"], (sid, tenant)
            assert cell["foreign_rows"] == 0, (sid, tenant)
            # four concurrent clients: the product's strategies only
            if sid.startswith("product"):
                assert cell["qps_4"] > 0 and cell["p95_ms_4"] > 0, (sid, tenant)
            else:
                assert cell["qps_4"] is None and cell["p95_ms_4"] is None, (sid, tenant)
    # exact search is the ground truth's own definition, however the text is joined
    for sid in ("exact_btree", "exact_topk_then_join", "exact_join_all_then_topk"):
        for cell in strategies[sid]["tenants"].values():
            assert cell["recall_at_10"] == 1.0, sid
    # every tenant here is below the exact-search threshold: the product searches exactly
    for cell in strategies["product_default"]["tenants"].values():
        assert cell["plan"] == "rag.search_chunks: exact" and cell["recall_at_10"] == 1.0
    assert strategies["hnsw_ef100_off"]["build_s"] > 0
    assert strategies["hnsw_ef100_off"]["index_mb"] > 0
    markdown = (folder / "report.md").read_text()
    assert "## How the data was made" in markdown and "## Verdict" in markdown
    assert "default_meets_goal" in markdown


@pytest.mark.slow
def test_diskann_says_not_installed(outcome: tuple[dict[str, Any], Path, Path, str],
                                    pg_server: EmbeddedPostgres) -> None:
    stored, folder, _, _ = outcome
    with psycopg.connect(pg_server.admin_url("postgres")) as conn:
        assert vectorscale_status(conn) is None  # the embedded server has no pgvectorscale
    assert stored["results"]["diskann"] == NOT_INSTALLED == "not installed"
    assert not any(s["family"] == "diskann" for s in stored["results"]["strategies"].values())
    markdown = (folder / "report.md").read_text()
    assert "| diskann | not installed" in markdown


@pytest.mark.slow
def test_scratch_database_is_dropped(outcome: tuple[dict[str, Any], Path, Path, str],
                                     pg_server: EmbeddedPostgres) -> None:
    assert not _database_exists(pg_server, outcome[3])


def test_refuses_databases_it_did_not_create(
        create_database: Callable[[str], Settings]) -> None:
    foreign = create_database("notbench")
    with pytest.raises(BenchmarkError, match="not created by rag bench index"):
        create_bench_database(make_settings(), foreign.embedded_database)
    with pytest.raises(BenchmarkError, match="product's own database"):
        create_bench_database(foreign, foreign.embedded_database)


# --- pure parts: scoring, data, recommendation -----------------------------------------------
def _tenant(vectors: np.ndarray, start: int, stop: int, queries: np.ndarray) -> TenantData:
    truth, kth = ground_truth(vectors[start:stop], queries)
    return TenantData("t", 0.5, start, stop, queries, ["claim"] * len(queries),
                      truth + start + 1, kth)


def test_recall_counts_ties_and_rejects_other_tenants_rows() -> None:
    rng = np.random.default_rng(1)
    vectors = normalise(rng.standard_normal((40, 8)).astype(np.float32))
    vectors[5] = vectors[4]  # an exact tie
    query = vectors[4:5].copy()
    tenant = _tenant(vectors, 0, 20, query)
    dataset = Dataset(vectors, ["x"], np.zeros(40, dtype=np.int32), np.zeros(40, dtype=bool),
                      [tenant], np.arange(40))
    truth = [int(i) for i in tenant.truth[0]]
    assert recall_at_k(dataset, tenant, 0, truth) == (1.0, 0)
    # the tie may come back in either order; a row of another tenant (id 21+) is no hit
    swapped = [truth[1], truth[0], *truth[2:]]
    assert recall_at_k(dataset, tenant, 0, swapped) == (1.0, 0)
    assert recall_at_k(dataset, tenant, 0, [*truth[:9], 30]) == (0.9, 1)
    assert recall_at_k(dataset, tenant, 0, truth[:5]) == (0.5, 0)
    assert recall_at_k(dataset, tenant, 0, [truth[0]] * K) == (0.1, 0)


def test_mixture_draws_unit_vectors_near_the_real_ones() -> None:
    rng = np.random.default_rng(2)
    centres = normalise(rng.standard_normal((6, 32)).astype(np.float32))
    real = normalise(np.repeat(centres, 30, axis=0)
                     + 0.1 * rng.standard_normal((180, 32)).astype(np.float32))
    mixture = fit_mixture(real, clusters=6, neighbours=5, neighbour_scale=0.7,
                          noise_scale=0.35, rng=rng)
    assert mixture.neighbours.shape == (180, 5)
    # a row's nearest neighbours are in its own group here
    assert (mixture.neighbours // 30 == np.arange(180)[:, None] // 30).all()
    sample, picks = mixture.sample(500, rng)
    assert sample.shape == (500, 32)
    assert np.allclose(np.linalg.norm(sample, axis=1), 1.0, atol=1e-5)
    to_centre = np.einsum("ij,ij->i", sample, real[picks])
    assert to_centre.mean() > 0.8  # spread like the real neighbourhood, not the whole space
    to_other_groups = sample @ centres.T
    assert (np.argmax(to_other_groups, axis=1) == picks // 30).mean() > 0.95
    assert DataSpec(vectors=1000, shares=(0.01, 0.05, 0.1, 0.34, 0.5), queries_per_tenant=5,
                    real_chunks=10).tenant_rows() == [10, 50, 100, 340, 500]


def _cell(recall: float, p95: float) -> CellResult:
    return CellResult(recall, p95 / 2, p95, 100.0, 150.0, 10, "", None, 0, 0, 0.0)


def test_recommendation_sends_small_tenants_to_exact_search() -> None:
    """Exact search is fast only for small tenants, HNSW accurate only for large ones: the
    proposal is a threshold between the two, at the best ef_search."""
    rows = [1000, 5000, 10_000, 34_000, 50_000]
    tenants = [TenantData(f"t{i}", r / 100_000, 0, r, np.zeros((1, 4), dtype=np.float32),
                          ["claim"], np.zeros((1, K), dtype=np.int64), np.zeros(1))
               for i, r in enumerate(rows)]
    dataset = Dataset(np.zeros((1, 4), dtype=np.float32), [], np.zeros(1, dtype=np.int32),
                      np.zeros(1, dtype=bool), tenants, np.zeros(1, dtype=np.int64))
    context = BenchContext(make_settings(), IndexBenchConfig.quick(product_ef=(100, 400)),
                           dataset)

    def result(sid: str, cells: list[CellResult]) -> StrategyResult:
        strategy = Strategy(sid, "product", sid, sid, 0, None)  # type: ignore[arg-type]
        return StrategyResult(strategy, 1.0, 1.0,
                              {t.name: c for t, c in zip(tenants, cells, strict=True)})

    exact = [_cell(1.0, r / 2000) for r in rows]  # 0.5 ms per 1000 rows: 20k rows = 10 ms
    results = [
        result("product_forced_exact", exact),
        result("product_forced_hnsw_ef100", [_cell(x, 3) for x in (0.5, 0.9, 0.97, 0.99, 1)]),
        result("product_forced_hnsw_ef400", [_cell(x, 6) for x in (0.6, 0.95, 0.985, 1, 1)]),
    ]
    meeting = [c for c in compose_candidates(context, results) if c.meets_goal]
    assert {(c.threshold_covers_rows, c.ef_search) for c in meeting} == {
        (5000, 400), (10_000, 100), (10_000, 400)}
    best = best_function_config(context, results)
    assert best is not None
    assert best.ef_search == 100  # lowest worst-case p95
    assert 10_000 <= best.exact_max_rows < 34_000  # exact for 10k, HNSW for 34k
    assert best.exact_max_rows == 20_000  # where the exact branch's p95 reaches 10 ms
    context_none = BenchContext(make_settings(), IndexBenchConfig.quick(product_ef=(100,)),
                                dataset)
    assert best_function_config(context_none, results[:1]) is None


def test_config_rejects_unknown_phases_and_bad_shares() -> None:
    with pytest.raises(ValueError, match="unknown phases"):
        IndexBenchConfig(phases=("exact", "lsh"))
    with pytest.raises(ValueError, match="add up to 1"):
        IndexBenchConfig(shares=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"partition_hnsw .* \(24, 40\)"):
        IndexBenchConfig(partition_hnsw=(24, 40))  # ef_construction < 2 * m
    assert IndexBenchConfig.full().vectors == 500_000
    assert IndexBenchConfig.quick().vectors < 50_000


# --- the CLI and the flow run the same stages -------------------------------------------------
@pytest.fixture()
def env_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 pg_server: EmbeddedPostgres) -> Iterator[Path]:
    """``get_settings()`` (what the CLI and the flow read) pointed at the test servers."""
    for name in ("DATABASE_URL", "RAG_DATABASE_URL", "RAG_APP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAG_STATE_DIR", str(TEST_STATE_DIR))
    monkeypatch.setenv("RAG_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()
    yield tmp_path / "reports"
    get_settings.cache_clear()


def _bench_app() -> typer.Typer:
    """``rag bench`` with the index command (and a second one: a group with one command
    would collapse into it)."""
    bench_app = typer.Typer()
    bench_index.register(bench_app)

    @bench_app.command("other")
    def other() -> None:
        """Placeholder."""

    return bench_app


@pytest.mark.slow
def test_cli_prints_one_json_object_last(env_settings: Path, embedder: Embedder) -> None:
    bench_app = _bench_app()
    database = f"bench_index_{secrets.token_hex(4)}"
    result = CliRunner().invoke(bench_app, [
        "index", "--quick", "--vectors", "2000", "--queries-per-tenant", "2",
        "--real-chunks", "40", "--phase", "exact", "--phase", "diskann",
        "--database", database, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["ok"] is True and payload["diskann"] == "not installed"
    assert set(payload["strategies"]) == {"exact_btree", "exact_topk_then_join",
                                          "exact_join_all_then_topk"}
    assert Path(payload["report"]).parent == env_settings / "index"
    assert isinstance(payload["default_meets_goal"], bool)


def test_cli_rejects_a_bad_partition_graph(env_settings: Path) -> None:
    bench_app = _bench_app()
    result = CliRunner().invoke(bench_app, ["index", "--partition-hnsw", "24"])
    assert result.exit_code != 0
    assert "M,EF_CONSTRUCTION" in result.output and "'24'" in result.output


def test_cli_rejects_a_bad_database_name(env_settings: Path) -> None:
    bench_app = _bench_app()
    result = CliRunner().invoke(bench_app, ["index", "--database", "Robert'); DROP"])
    assert result.exit_code != 0
    assert "database" in result.output


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_flow_runs_the_same_stages(prefect_harness: None, env_settings: Path,
                                   embedder: Embedder, pg_server: EmbeddedPostgres) -> None:
    from flows import _resources
    from flows.benchmark_index import benchmark_index
    from rag_core.composition import Platform

    database = f"bench_index_{secrets.token_hex(4)}"
    with pytest.MonkeyPatch.context() as patch:
        # the flow's tasks read their settings from this process's platform
        patch.setattr(_resources, "_platform", Platform(make_settings(), start_services=False))
        summary = benchmark_index(quick=True, database=database, vectors=2000,
                                  queries_per_tenant=2, real_chunks=40,
                                  phases=["exact", "hnsw", "diskann", "partition"],
                                  partition_hnsw=[8, 32])
    assert summary["diskann"] == "not installed"
    assert {"exact_btree", "exact_topk_then_join", "exact_join_all_then_topk", "hnsw_ef100_off",
            "hnsw_ef100_relaxed_order", "partition_exact", "partition_ef100"} \
        == set(summary["strategies"])
    for strategy in summary["strategies"].values():
        assert len(strategy["tenants"]) == 5
    assert Path(summary["report"]).parent == env_settings / "index"
    stored = json.loads((Path(summary["report"]) / "results.json").read_text())["results"]
    partitioned = stored["strategies"]["partition_ef100"]
    assert (partitioned["params"]["m"], partitioned["params"]["ef_construction"]) == (8, 32)
    assert "m 8 efc 32" in partitioned["label"]
    # a partition holds one tenant: exact search in it is the ground truth
    for cell in stored["strategies"]["partition_exact"]["tenants"].values():
        assert cell["recall_at_10"] == 1.0 and cell["foreign_rows"] == 0
    assert not _database_exists(pg_server, database)


def test_latency_basis_is_wall_clock_unless_cpu_is_asked_and_measured() -> None:
    from psycopg import sql as pgsql

    from evaluations.index.judging import latency_basis, meets_goal

    def cell(p95_ms: float, cpu_p95_ms: float | None) -> CellResult:
        return CellResult(0.99, p95_ms / 2, p95_ms, 100.0, 150.0, 30, "exact", True, 0, 0,
                          1.0, cpu_p95_ms and cpu_p95_ms / 2, cpu_p95_ms)

    strategy = Strategy("s", "exact", "s", "s", 0, pgsql.Composed([]))
    slow_wall = cell(p95_ms=25.0, cpu_p95_ms=4.0)  # a busy machine: waiting for a core
    with_cpu = [StrategyResult(strategy, None, None, {"t": slow_wall})]
    without_cpu = [StrategyResult(strategy, None, None, {"t": cell(25.0, None)})]

    assert latency_basis(IndexBenchConfig(), with_cpu) == "wall"  # the default
    assert latency_basis(IndexBenchConfig(latency_basis="auto"), with_cpu) == "cpu"
    assert latency_basis(IndexBenchConfig(latency_basis="cpu"), without_cpu) == "wall"
    config = IndexBenchConfig()
    assert not meets_goal(slow_wall, config, "wall")
    assert meets_goal(slow_wall, config, "cpu")


@pytest.mark.parametrize("phase", ["product", "plan"])
def test_a_phase_runs_alone_and_the_plan_is_the_judged_row(
        pg_server: EmbeddedPostgres, embedder: Embedder, tmp_path: Path, phase: str) -> None:
    """``--phase product`` alone once ended in KeyError 'btree' (it read what the exact phase
    builds); phase ``plan`` promotes the tenants past its threshold with the product's code
    and its row, product_plan, is the one default_meets_goal judges."""
    config = tiny_config(phases=(phase,), plan_own_min_rows=500, plan_ingest_vectors=20)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_REPORTS_DIR", str(tmp_path))
        result = run_index_benchmark(make_settings(), config, embedder)
    summary = result.summary()
    assert isinstance(summary["default_meets_goal"], bool)
    if phase == "product":
        assert "product_default" in summary["strategies"] and summary["plan"] is None
        return
    assert set(summary["strategies"]) == {"product_plan"}
    plan = summary["plan"]
    promoted = {p["tenant"] for p in plan["promotions"]}
    tenants = result.results.tenants
    assert promoted == {t.name for t in tenants if t.rows >= 500} != set()
    for promotion in plan["promotions"]:
        assert promotion["failed_or_short_queries"] == 0
        assert promotion["s_per_100k_vectors"] > 0
    assert plan["ingest"]["shared_vectors_per_s"] > 0
    assert plan["ingest"]["own_vectors_per_s"] > 0
    cells = summary["strategies"]["product_plan"]["tenants"]
    assert all(0.0 <= c["recall_at_10"] <= 1.0 for c in cells.values())
    assert all(c["p95_ms_4"] > 0 and c["qps_4"] > 0 for c in cells.values())
    stored = json.loads((result.folder / "results.json").read_text())
    plans = {t: c["plan"] for t, c in stored["results"]["strategies"]["product_plan"]
             ["tenants"].items()}
    assert {plans[t] for t in promoted} == {"rag.search_chunks: own_hnsw"}
    markdown = (result.folder / "report.md").read_text()
    assert "promotions and ingestion" in markdown and "p95 ms, 4 clients" in markdown
    largest = max(tenants, key=lambda t: t.rows).name
    assert f"Ingestion into {largest} (20 vectors" in markdown  # an f-string once lacked its f
