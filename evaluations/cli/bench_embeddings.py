"""``rag bench embeddings``: FastEmbed fp32 / int8 vs sentence-transformers on this machine.

Wired into ``rag bench`` by ``bench_embeddings.register(bench_app)``. The work is done by
:func:`evaluations.embeddings.benchmark.run_embedding_benchmark`, the same library code the
Prefect flow ``benchmark-embeddings`` runs; no Prefect server is needed here. Progress goes
to standard error; the summary to standard output, and with ``--json`` one JSON object as
the last line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag_core.cli._output import console, emit_json, err_console, fail_cleanly
from rag_core.config import get_settings

if TYPE_CHECKING:
    from evaluations.embeddings.config import EmbeddingBenchmarkConfig

__all__ = ["bench_embeddings", "register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def register(bench_app: typer.Typer) -> None:
    """Add ``embeddings`` to the ``rag bench`` command group."""
    bench_app.command("embeddings")(bench_embeddings)


@fail_cleanly
def bench_embeddings(
    quick: Annotated[bool, typer.Option(
        "--quick", help="fewer texts and rounds; nDCG on 50 queries + their judged docs + "
                        "300 distractors (not comparable to the full score)")] = False,
    rounds: Annotated[int | None, typer.Option(
        min=1, max=100, help="interleaved throughput rounds (default 5, quick 3)")] = None,
    batch_sizes: Annotated[list[int] | None, typer.Option(
        "--batch-size", min=1, max=1024,
        help="batch size to measure, repeatable (default 8, 32, 64 and the configured "
             "embed batch size)")] = None,
    probe_rounds: Annotated[int | None, typer.Option(
        min=1, max=20, help="rounds of fresh processes (one per backend and batch size) for "
                            "cold load and peak RSS (default 1)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare FastEmbed fp32/int8 with sentence-transformers (same weights).

    Throughput (texts/s, tokens/s) at several batch sizes in interleaved rounds, cold load
    and peak RSS per backend process, cosine agreement and SciFact nDCG@10; writes a report
    under reports/embeddings/.
    """
    from evaluations.embeddings.benchmark import run_embedding_benchmark
    from evaluations.embeddings.config import EmbeddingBenchmarkConfig
    from evaluations.embeddings.progress import planned_steps
    from rag_core.ingestion.chunking import ChunkingPolicy

    settings = get_settings()
    config = EmbeddingBenchmarkConfig.preset(
        quick, rounds=rounds, batch_sizes=batch_sizes or None, probe_rounds=probe_rounds,
        default_batch_size=settings.embed_batch_size,
        chunking=ChunkingPolicy(max_tokens=settings.chunk_max_tokens,
                                overlap_tokens=settings.chunk_overlap_tokens))
    err_console.print(f"embedding benchmark ({'quick' if quick else 'full'} mode): batch sizes "
                      f"{config.batch_sizes}, {config.rounds} rounds, {config.probe_rounds} "
                      f"probe round(s)", highlight=False)
    if err_console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console) as bar:
            task = bar.add_task("starting", total=planned_steps(config))

            def update(description: str, done: int, total: int) -> None:
                bar.update(task, description=description, completed=done, total=total)

            outcome = run_embedding_benchmark(config, settings.state_dir, progress=update)
    else:
        def log(description: str, done: int, total: int) -> None:
            err_console.print(f"[{done}/{total}] {description}", highlight=False)

        outcome = run_embedding_benchmark(config, settings.state_dir, progress=log)
    data = outcome.as_dict()
    _print_summary(data, config)
    if as_json:
        emit_json(data)


def _print_summary(data: dict[str, Any], config: EmbeddingBenchmarkConfig) -> None:
    table = Table(title=f"embedding backends, batch {config.default_batch_size} "
                        f"({data['mode']} mode)")
    for column in ("backend", "texts/s", "tokens/s", "x ST", "load s", "peak RSS MiB",
                   "min cos", "nDCG@10"):
        table.add_column(column)
    speedup = {"fastembed": data["fastembed_speedup"], "fastembed-int8": data["int8_speedup"],
               "sentence-transformers": 1.0}
    min_cos = {"fastembed": data["min_cosine"], "fastembed-int8": data["int8_min_cosine"],
               "sentence-transformers": 1.0}
    for backend in data["backends"]:
        row = next(r for r in data["throughput"] if r["backend"] == backend
                   and r["batch_size"] == config.default_batch_size and r["kind"] == "all")
        table.add_row(backend, f"{row['texts_per_s']['median']:.1f}",
                      f"{row['tokens_per_s']['median']:.0f}", f"{speedup[backend]:.2f}",
                      f"{data['load_s'][backend]:.1f}", f"{data['peak_rss_mb'][backend]:.0f}",
                      f"{min_cos[backend]:.5f}", f"{data['ndcg@10'][backend]:.4f}")
    console.print(table)
    console.print(f"goals: {data['goals']['summary']}", highlight=False)
    console.print(f"load average (1 min) {data['load_average']['min_1m']}-"
                  f"{data['load_average']['max_1m']}; report: {data['report']}",
                  highlight=False)
