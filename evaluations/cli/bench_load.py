"""``rag bench load``: the HTTP service under wrk (req/s and latency, cached and uncached,
errors, audit rows). Wired into ``rag bench`` by ``bench_load.register(bench_app)``; the work
is done by :func:`evaluations.load.benchmark.run_load_benchmark`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, err_console, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings

__all__ = ["bench_load", "register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def register(bench_app: typer.Typer) -> None:
    """Add ``load`` to the ``rag bench`` command group."""
    bench_app.command("load")(bench_load)


@fail_cleanly
def bench_load(
    quick: Annotated[bool, typer.Option(
        "--quick", help="a few seconds per phase, 30 documents (a smoke test)")] = False,
    duration: Annotated[int | None, typer.Option(
        min=1, help="seconds of the cached phase (default 20)")] = None,
    uncached_duration: Annotated[int | None, typer.Option(
        min=1, help="seconds of the uncached phase (default 10)")] = None,
    connections: Annotated[int | None, typer.Option(
        min=1, help="wrk connections, cached phase (default 16)")] = None,
    uncached_connections: Annotated[int | None, typer.Option(
        min=1, help="wrk connections, uncached phase (default 4)")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, help="rag serve worker processes (default 2)")] = None,
    docs: Annotated[int | None, typer.Option(min=5, help="SciFact abstracts (default 200)")]
    = None,
    warm_questions: Annotated[int | None, typer.Option(
        min=1, help="distinct cached questions (default 100)")] = None,
    llm_latency_ms: Annotated[float | None, typer.Option(
        min=0, help="the fake LLM's latency per call (default 20)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """rag serve (2 workers) on 127.0.0.1 under wrk: req/s and p50/p95/p99 of cached and
    uncached questions, errors, and every request's audit row counted."""
    from evaluations.load.benchmark import run_load_benchmark
    from evaluations.load.config import LoadBenchConfig
    from evaluations.load.results import write_report

    config = LoadBenchConfig.preset(
        quick, cached_duration_s=duration, uncached_duration_s=uncached_duration,
        connections=connections, uncached_connections=uncached_connections,
        workers=workers, docs=docs, warm_questions=warm_questions,
        llm_latency_ms=llm_latency_ms)
    settings = get_settings()
    with Platform(settings) as platform, \
            tempfile.TemporaryDirectory(prefix="rag-load-") as folder:
        result = run_load_benchmark(platform, config, Path(folder),
                                    note=lambda m: err_console.print(m, highlight=False))
    folder_written = write_report(result)
    data = result.as_dict()
    console.print(
        f"cached: {data['cached_rps']} req/s, p50/p95/p99 {data['cached_p50_ms']}/"
        f"{data['cached_p95_ms']}/{data['cached_p99_ms']} ms ({data['connections']} "
        f"connections); uncached: {data['uncached_rps']} req/s, p95 "
        f"{data['uncached_p95_ms']} ms; errors {data['errors']}; audit rows "
        f"{data['audit_rows_written']}/{data['audit_rows_expected']}; report "
        f"{folder_written}", highlight=False)
    if as_json:
        emit_json({**data, "report": str(folder_written)})
