"""``rag bench embeddings`` in its smallest mode: the real backends, worker processes and
report writer, on a handful of texts. Timing is never asserted (the suite shares 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from evaluations.cli import bench_embeddings
from evaluations.embeddings.benchmark import run_embedding_benchmark
from evaluations.embeddings.config import BACKENDS, GOALS, EmbeddingBenchmarkConfig
from rag_core.config import get_settings
from rag_core.embeddings.registry import ensure_models
from tests.conftest import TEST_STATE_DIR

REQUIRED_KEYS = {
    "fastembed_speedup", "int8_speedup", "fastembed_rss_ratio", "int8_rss_ratio", "min_cosine",
    "mean_cosine", "int8_min_cosine", "int8_mean_cosine", "ndcg@10", "recall@100",
    "int8_ndcg_loss", "fastembed_ndcg_loss", "load_s", "load", "load_rss_mb", "peak_rss_mb",
    "throughput", "speedups", "agreement", "retrieval", "workload", "load_average", "goals",
    "mode", "default_batch_size", "batch_sizes", "backends", "config", "report",
}


def tiny_config() -> EmbeddingBenchmarkConfig:
    return EmbeddingBenchmarkConfig.preset(
        quick=True, passages=12, queries=4, long_texts=2, warmup_texts=4, batch_sizes=[4, 8],
        default_batch_size=8, rounds=1, probe_rounds=1, eval_queries=3, distractors=16,
        settle_s=0)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    reports = tmp_path_factory.mktemp("reports")
    ensure_models(TEST_STATE_DIR)  # a fresh clone has no ONNX export until something asks
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_REPORTS_DIR", str(reports))  # never write into the repository
        get_settings.cache_clear()  # reports go where the settings say
        try:
            result = run_embedding_benchmark(tiny_config(), TEST_STATE_DIR,
                                             command="pytest tiny embedding benchmark")
        finally:
            get_settings.cache_clear()
    return result.as_dict(), result.folder, reports


@pytest.mark.slow
def test_report_folder_is_complete(outcome: tuple[dict[str, Any], Path, Path]) -> None:
    data, folder, reports = outcome
    assert folder.parent == reports / "embeddings"
    assert {p.name for p in folder.iterdir()} >= {"report.md", "results.json", "throughput.png"}
    assert (folder / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "report.md").read_text()
    for backend in BACKENDS:
        assert backend in markdown
    assert "pytest tiny embedding benchmark" in markdown
    assert "Quick mode" in markdown and "not comparable" in markdown
    stored = json.loads((folder / "results.json").read_text())
    assert stored["benchmark"] == "embeddings"
    assert stored["machine"]["logical_cores"] >= 1
    assert stored["results"]["goals"] == data["goals"]


@pytest.mark.slow
def test_results_have_every_key_with_sane_values(
        outcome: tuple[dict[str, Any], Path, Path]) -> None:
    data, _, _ = outcome
    assert data.keys() >= REQUIRED_KEYS
    assert data["mode"] == "quick"
    for key in ("fastembed_speedup", "int8_speedup", "fastembed_rss_ratio", "int8_rss_ratio"):
        assert isinstance(data[key], float) and data[key] > 0, key
    for key in ("min_cosine", "mean_cosine", "int8_min_cosine", "int8_mean_cosine"):
        assert 0.9 <= data[key] <= 1.0001, (key, data[key])
    assert data["min_cosine"] <= data["mean_cosine"]
    for backend in BACKENDS:
        assert 0.0 <= data["ndcg@10"][backend] <= 1.0
        assert data["load_s"][backend] > 0
        assert data["peak_rss_mb"][backend] > 50
        assert set(data["peak_rss_mb_by_batch"][backend]) == {4, 8}
        assert data["load"][backend]["samples"] == 3  # 2 memory probes + the warm worker
    assert data["int8_ndcg_loss"] == pytest.approx(
        data["ndcg@10"]["sentence-transformers"] - data["ndcg@10"]["fastembed-int8"], abs=1e-4)
    # one row per backend, batch size and kind; every cell measured in every round
    cells = {(r["backend"], r["batch_size"], r["kind"]) for r in data["throughput"]}
    assert cells == {(b, s, k) for b in BACKENDS for s in (4, 8)
                     for k in ("all", "passages", "queries")}
    for row in data["throughput"]:
        assert row["rounds"] == 1
        assert 0 < row["texts_per_s"]["min"] <= row["texts_per_s"]["median"] \
            <= row["texts_per_s"]["max"]
        assert row["tokens_per_s"]["median"] > row["texts_per_s"]["median"]
    long_texts = data["agreement"]["fastembed"]["long_texts"]
    assert long_texts["n"] == 2 and long_texts["min"] >= 0.9
    assert data["workload"]["passages"]["tokens_max"] <= 256
    assert data["retrieval"]["full_corpus"] is False and data["retrieval"]["queries"] == 3


@pytest.mark.slow
def test_goals_say_which_hold(outcome: tuple[dict[str, Any], Path, Path]) -> None:
    goals = outcome[0]["goals"]
    names = [key for key, *_ in GOALS]
    assert sorted(goals["held"] + goals["missed"]) == sorted(names)
    for name in names:
        assert isinstance(goals[name]["holds"], bool)
        assert (name in goals["held"]) == goals[name]["holds"]
    assert goals["int8_goal"]["holds"] == (goals["int8_speedup_2.5x"]["holds"]
                                           and goals["int8_ndcg_loss_0.005"]["holds"])
    assert isinstance(goals["summary"], str) and goals["summary"]


def test_config_always_measures_the_default_batch_size() -> None:
    config = EmbeddingBenchmarkConfig.preset(quick=True, batch_sizes=[64, 8, 8],
                                             default_batch_size=16)
    assert config.batch_sizes == [8, 16, 64]
    assert config.eval_queries == 50 and config.distractors == 300
    assert EmbeddingBenchmarkConfig.preset().full_retrieval
    with pytest.raises(ValueError, match="batch sizes"):
        EmbeddingBenchmarkConfig(batch_sizes=[0])


def test_register_adds_the_embeddings_command() -> None:
    bench_app = typer.Typer()
    bench_embeddings.register(bench_app)

    @bench_app.command("other")
    def other() -> None:  # a group with one command would collapse into it
        """Placeholder."""

    result = CliRunner().invoke(bench_app, ["embeddings", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--quick", "--json", "--rounds", "--batch-size", "--probe-rounds"):
        assert option in result.output
