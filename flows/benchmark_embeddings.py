"""Prefect flow ``benchmark-embeddings``: FastEmbed fp32 / int8 vs sentence-transformers.

The same library steps as ``rag bench embeddings`` (``evaluations.embeddings``), one
task each, for scheduled runs on a process work pool: the measurements spawn their own worker
processes (one per backend) and need the machine to themselves, so run it on a quiet worker.
No retries: a benchmark that failed half-way is reported, not silently repeated.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from evaluations.common.reports import reports_root
from evaluations.embeddings.benchmark import BenchmarkOutcome
from evaluations.embeddings.config import EmbeddingBenchmarkConfig
from evaluations.embeddings.measure import (
    LoadSample,
    WarmResult,
    measure_cold_loads,
    measure_warm,
)
from evaluations.embeddings.progress import Progress
from evaluations.embeddings.report import write_report
from evaluations.embeddings.results import EmbeddingResults
from evaluations.embeddings.summary import summarize
from evaluations.embeddings.workload import Workload, prepare_workload
from flows._resources import platform
from rag_core.ingestion.chunking import ChunkingPolicy


def _logged(total: int) -> Progress:
    logger = get_run_logger()
    return Progress(total, lambda description, _done, _total: logger.info(description))


@task(name="prepare-embedding-workload", cache_policy=NO_CACHE)
def prepare(config: EmbeddingBenchmarkConfig, state_dir: Path, workdir: Path) -> Workload:
    workload = prepare_workload(config, state_dir, workdir)
    get_run_logger().info("workload: %s", json.dumps(
        workload.description | {"eval": workload.eval_set.as_dict()}, default=str))
    return workload


@task(name="measure-cold-loads-and-memory", cache_policy=NO_CACHE)
def cold_loads(config: EmbeddingBenchmarkConfig, workload: Workload,
               state_dir: Path) -> list[LoadSample]:
    probes = config.probe_rounds * len(config.batch_sizes) * len(config.backends)
    return measure_cold_loads(config, workload, state_dir, _logged(probes))


@task(name="measure-throughput-and-vectors", cache_policy=NO_CACHE)
def warm_measurements(config: EmbeddingBenchmarkConfig, workload: Workload,
                      state_dir: Path) -> WarmResult:
    return measure_warm(config, workload, state_dir, _logged(0))


@task(name="score-embeddings", cache_policy=NO_CACHE)
def score(config: EmbeddingBenchmarkConfig, workload: Workload, loads: list[LoadSample],
          warm: WarmResult) -> EmbeddingResults:
    results = summarize(config, workload, loads, warm)
    get_run_logger().info("goals: %s", results.goals.summary)
    return results


@task(name="write-embedding-report", cache_policy=NO_CACHE)
def report(results: EmbeddingResults, command: str, root: Path) -> str:
    return str(write_report(results, command, root))


@flow(name="benchmark-embeddings", log_prints=True)
def benchmark_embeddings(
    quick: bool = False,
    batch_sizes: list[int] | None = None,
    rounds: Annotated[int | None, Field(ge=1, le=100)] = None,
    probe_rounds: Annotated[int | None, Field(ge=1, le=20)] = None,
    default_batch_size: Annotated[int | None, Field(ge=1, le=1024)] = None,
) -> dict[str, Any]:
    """Throughput, cold load, peak RSS, cosine agreement and SciFact nDCG@10 of the three
    embedding backends; writes <reports>/embeddings/<timestamp>/ (``Settings.reports_dir``)
    and returns its results (the object ``rag bench embeddings --json`` prints)."""
    settings = platform().settings
    config = EmbeddingBenchmarkConfig.preset(
        quick, batch_sizes=batch_sizes, rounds=rounds, probe_rounds=probe_rounds,
        default_batch_size=default_batch_size or settings.embed_batch_size,
        chunking=ChunkingPolicy(max_tokens=settings.chunk_max_tokens,
                                overlap_tokens=settings.chunk_overlap_tokens))
    command = "prefect flow benchmark-embeddings " + json.dumps(
        {"quick": quick, "batch_sizes": config.batch_sizes, "rounds": config.rounds,
         "probe_rounds": config.probe_rounds, "default_batch_size": config.default_batch_size})
    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-embeddings-"))
    try:
        workload = prepare(config, settings.state_dir, workdir)
        loads = cold_loads(config, workload, settings.state_dir)
        warm = warm_measurements(config, workload, settings.state_dir)
        results = score(config, workload, loads, warm)
        folder = report(results, command, reports_root(settings))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return BenchmarkOutcome(results, Path(folder)).as_dict()


if __name__ == "__main__":
    benchmark_embeddings()
