"""The ``benchmark-embeddings`` Prefect flow in its quick mode, at the smallest sweep the flow
takes (one batch size, one round): the same library steps as ``rag bench embeddings`` run as
tasks, on the real backends in their own worker processes, with the report written where
the worker's settings say. Timing is never asserted (the suite shares 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluations.embeddings.config import BACKENDS, GOALS
from flows import _resources
from flows.benchmark_embeddings import benchmark_embeddings
from rag_core.composition import Platform
from rag_core.embeddings.base import Embedder
from tests.conftest import make_settings
from tests.evaluations.test_embedding_benchmark import REQUIRED_KEYS


@pytest.mark.slow
def test_quick_flow_measures_every_backend_and_writes_its_report(
        prefect_harness: None, embedder: Embedder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `embedder` exports the ONNX models into the test state folder the workers load from
    reports = tmp_path / "reports"
    platform = Platform(make_settings(reports_dir=reports), start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)  # the flow's settings

    data = benchmark_embeddings(quick=True, batch_sizes=[8], rounds=1, probe_rounds=1,
                                default_batch_size=8)

    assert data["ok"] is True and data.keys() >= REQUIRED_KEYS
    assert (data["mode"], data["batch_sizes"], data["default_batch_size"]) == ("quick", [8], 8)
    assert data["backends"] == list(BACKENDS)
    assert data["config"]["rounds"] == 1 and data["config"]["eval_queries"] == 50
    assert {(r["backend"], r["kind"]) for r in data["throughput"]} == {
        (b, k) for b in BACKENDS for k in ("all", "passages", "queries")}
    for backend in BACKENDS:
        assert data["load"][backend]["samples"] == 2  # one memory probe + the warm worker
        assert 0.0 <= data["ndcg@10"][backend] <= 1.0
    assert data["retrieval"]["queries"] == 50 and data["retrieval"]["full_corpus"] is False
    assert sorted(data["goals"]["held"] + data["goals"]["missed"]) == \
        sorted(key for key, *_ in GOALS)

    folder = Path(data["report"])
    assert folder.parent == reports / "embeddings"
    assert {"report.md", "results.json", "throughput.png"} <= {p.name for p in folder.iterdir()}
    stored = json.loads((folder / "results.json").read_text())
    assert stored["command"].startswith("prefect flow benchmark-embeddings ")
    assert stored["results"]["goals"] == data["goals"]
    assert stored["results"]["ndcg@10"] == data["ndcg@10"]
