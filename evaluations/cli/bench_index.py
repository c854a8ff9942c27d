"""``rag bench index``: vector index strategies per tenant size (recall@10, p50/p95, QPS, build
time, size), with a verdict on the product's default. Wire it with
``bench_index.register(bench_commands.bench_app)``."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag_core.cli._output import console, emit_json, err_console, fail_cleanly
from rag_core.config import get_settings

if TYPE_CHECKING:
    from evaluations.index.stages import IndexBenchmarkOutcome

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


class _RichProgress:
    """One bar over every (strategy, tenant) cell on stderr; phase notes above it."""

    def __init__(self) -> None:
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=err_console)
        self._task = self._bar.add_task("preparing data", total=None)

    def __enter__(self) -> _RichProgress:
        self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._bar.stop()

    def add_total(self, count: int) -> None:
        current = self._bar.tasks[0].total or 0
        self._bar.update(self._task, total=current + count)

    def advance(self, description: str, count: int = 1) -> None:
        self._bar.update(self._task, description=description[:72], advance=count)

    def note(self, message: str) -> None:
        self._bar.console.log(message)


def _print_table(outcome: IndexBenchmarkOutcome) -> None:
    results = outcome.results.as_dict()  # the numbers as reported (rounded)
    tenants = [t["name"] for t in results["tenants"]]
    goal = results["goal"]
    table = Table(title="recall@10 · p95 ms per tenant (bold: meets the goal)")
    table.add_column("strategy (see the report for labels)", overflow="fold")
    for name in tenants:
        table.add_column(name, justify="right")
    table.add_column("build s", justify="right")
    table.add_column("MB", justify="right")
    for sid, data in results["strategies"].items():
        cells = []
        for name in tenants:
            cell = data["tenants"][name]
            text = f"{cell['recall_at_10']:.3f} · {cell['p95_ms']:.1f}"
            ok = cell["recall_at_10"] >= goal["recall_at_10"] and cell["p95_ms"] <= goal["p95_ms"]
            cells.append(f"[bold green]{text}[/]" if ok else text)
        table.add_row(sid, *cells,
                      "-" if data["build_s"] is None else f"{data['build_s']:.1f}",
                      "-" if data["index_mb"] is None else f"{data['index_mb']:.1f}")
    # piped output (logs, CI) gets a wide table instead of an 80-column one
    (console if console.is_terminal else Console(width=150)).print(table)
    diskann = results["diskann"]
    console.print(f"diskann: {diskann if isinstance(diskann, str) else diskann.get('status')}")
    console.print(results["recommendation"]["verdict"])
    console.print(f"report: {outcome.folder}")


def _pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise typer.BadParameter(f"expected M,EF_CONSTRUCTION (two integers), got {text!r}",
                                 param_hint="--partition-hnsw") from None


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("index")
    @fail_cleanly
    def bench_index(
        quick: Annotated[bool, typer.Option(
            "--quick", help="30,000 vectors, 10 queries per tenant, 1-2 settings per family")]
        = False,
        keep_db: Annotated[bool, typer.Option(
            "--keep-db", help="keep the scratch database (default: dropped at the end)")]
        = False,
        database: Annotated[str, typer.Option(
            help="scratch database created (and dropped) on the configured server")]
        = "bench_index",
        vectors: Annotated[int | None, typer.Option(
            min=100, help="override the number of vectors")] = None,
        queries_per_tenant: Annotated[int | None, typer.Option(
            min=1, help="override the queries per tenant")] = None,
        real_chunks: Annotated[int | None, typer.Option(
            min=10, help="override the real SciFact chunks embedded")] = None,
        phase: Annotated[list[str] | None, typer.Option(
            "--phase", help="only these phases (repeat): exact, product, hnsw, ivfflat, "
                            "halfvec, binary, hnsw_extra, diskann, partition, plan (each "
                            "runs alone)")] = None,
        plan_own_min_rows: Annotated[int | None, typer.Option(
            min=1, help="phase plan: the own-partition threshold (default: "
                        "RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS; 2,000 with --quick)")] = None,
        partition_hnsw: Annotated[str | None, typer.Option(
            help="M,EF_CONSTRUCTION of the per-tenant partitions' HNSW graphs (default 16,64)")]
        = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Compare exact, HNSW, IVFFlat, halfvec, binary, per-tenant partitions (and DiskANN
        when installed) on tenants holding 1-50% of the rows; judge the product's default."""
        from evaluations.index.config import IndexBenchConfig
        from evaluations.index.stages import run_index_benchmark
        from rag_core.db.embedded import EmbeddedPostgres
        from rag_core.embeddings.registry import ensure_models, load_embedder

        try:
            config = IndexBenchConfig.preset(
                quick, keep_db=keep_db, database=database, vectors=vectors,
                queries_per_tenant=queries_per_tenant, real_chunks=real_chunks,
                phases=phase or None, plan_own_min_rows=plan_own_min_rows,
                partition_hnsw=None if partition_hnsw is None else _pair(partition_hnsw))
        except ValidationError as exc:
            raise typer.BadParameter(str(exc)) from exc
        settings = get_settings()
        if settings.uses_embedded_postgres:
            EmbeddedPostgres(settings.state_dir).start()
        ensure_models(settings.state_dir)
        embedder = load_embedder("fastembed", state_dir=settings.state_dir)
        with _RichProgress() as progress:
            outcome = run_index_benchmark(settings, config, embedder, progress)
        _print_table(outcome)
        if as_json:
            emit_json(outcome.summary())
