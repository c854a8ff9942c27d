"""``rag bench …``: benchmarks that print numbers (never run as tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evaluations.cli import bench_embeddings, bench_index, bench_load, bench_redaction
from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings, scifact_dir

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
DEFAULT_CORPUS = scifact_dir() / "corpus.jsonl.gz"

bench_app = typer.Typer(help="Benchmarks (print numbers; not part of the test suite).",
                        no_args_is_help=True)
bench_embeddings.register(bench_app)
bench_index.register(bench_app)
bench_load.register(bench_app)
bench_redaction.register(bench_app)


@bench_app.command("ingest")
@fail_cleanly
def bench_ingest(
    corpus: Annotated[Path, typer.Option(help="BEIR corpus.jsonl[.gz]")] = DEFAULT_CORPUS,
    docs: Annotated[int | None, typer.Option(min=1, help="first N documents (default all)")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """Raw embedding throughput vs end-to-end ingestion throughput, same chunks, one run."""
    from evaluations.ingest.benchmark import run_ingest_benchmark

    with Platform(get_settings()) as platform:
        result = run_ingest_benchmark(platform.settings, platform.database,
                                      platform.embedder, corpus, docs)
    data = result.as_dict()
    console.print(f"{data['docs']} docs, {data['chunks']} chunks, backend {data['backend']}: "
                  f"raw embedding {data['raw_embed_per_s']} chunks/s, ingestion "
                  f"{data['ingest_per_s']} chunks/s, ratio {data['ratio']}")
    if as_json:
        emit_json(data)


@bench_app.command("query")
@fail_cleanly
def bench_query(
    docs: Annotated[int, typer.Option(min=5, help="SciFact abstracts in the bench tenant")] = 100,
    questions: Annotated[int, typer.Option(min=5, help="distinct questions")] = 40,
    llm_latency_ms: Annotated[float, typer.Option(help="fake LLM latency")] = 200.0,
    as_json: JsonFlag = False,
) -> None:
    """Query latency cached vs uncached, and batch-of-5 vs 5 single LLM calls."""
    from evaluations.query.benchmark import run_query_benchmark

    with Platform(get_settings()) as platform:
        result = run_query_benchmark(platform.settings, platform.database, platform.embedder,
                                     docs=docs, questions=questions,
                                     llm_latency_ms=llm_latency_ms)
    data = result.as_dict()
    console.print(f"uncached p50/p95 {data['uncached_p50_ms']}/{data['uncached_p95_ms']} ms; "
                  f"cached p50/p95 {data['cached_p50_ms']}/{data['cached_p95_ms']} ms; "
                  f"batch of 5: {data['batch_llm_calls']} call(s), {data['batch_tokens']} "
                  f"tokens vs 5 singles: {data['single_llm_calls']} calls, "
                  f"{data['single_tokens']} tokens (ratio {data['batch_token_ratio']})")
    if as_json:
        emit_json(data)
