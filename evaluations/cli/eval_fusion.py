"""``rag eval fusion-grid`` and ``rag eval hybrid-latency``: tuning hybrid retrieval's fusion
(``RAG_HYBRID__*``) in a tenant that already holds the corpus (see
``evaluations/retrieval/fusion_grid.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evaluations.cli.datasets import DATASET_HELP, dataset_dir
from evaluations.cli.progress import stage_progress
from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings

__all__ = ["register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
TenantOption = Annotated[str, typer.Option(
    help="an existing tenant holding the corpus (e.g. kept by `rag eval retrieval "
         "--keep-tenant`)")]
DatasetOption = Annotated[Path, typer.Option(help=DATASET_HELP)]
SplitOption = Annotated[str, typer.Option(help="qrels split (qrels/<split>.tsv)")]


def fusion_grid(
    tenant: TenantOption,
    dataset: DatasetOption = Path("scifact"),
    split: SplitOption = "test",
    rrf_k: Annotated[list[int] | None, typer.Option(
        "--rrf-k", min=0, help="RRF constants to try (repeat; default 10 and 60)")] = None,
    depth: Annotated[list[int] | None, typer.Option(
        "--depth", min=1, max=1000,
        help="candidates per side to try (repeat; default 50, 100, 200)")] = None,
    text_weight: Annotated[list[float] | None, typer.Option(
        "--text-weight", min=0.0, help="text weights to try, the dense weight being 1 "
                                      "(repeat; default 0.5, 1, 1.5)")] = None,
    per_document: Annotated[bool, typer.Option(
        help="also try each point fused per document (a lever measured here only)")]
    = False,
    k: Annotated[int, typer.Option(min=1, max=1000, help="chunks kept per query")] = 100,
    limit_queries: Annotated[int | None, typer.Option(
        min=1, help="only the first N judged queries")] = None,
    record: Annotated[bool, typer.Option(
        help="record each point in rag.benchmark_runs")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Score a grid of fusion settings (RRF constant, depth, weights) on a split: each
    query's candidates are fetched once and fused per point by the product's code."""
    from evaluations.retrieval.fusion_grid import grid_points, run_fusion_grid

    points = grid_points(tuple(rrf_k or (10, 60)), tuple(depth or (50, 100, 200)),
                         tuple(text_weight or (0.5, 1.0, 1.5)),
                         ("chunk", "document") if per_document else ("chunk",))
    with Platform(get_settings()) as platform, stage_progress(
            {"search": "queries (candidates)", "grid": "grid points"}) as progress:
        rows = run_fusion_grid(platform.settings, platform.database, platform.embedder,
                               dataset_dir(dataset), split, tenant, points, k=k,
                               limit_queries=limit_queries, record=record, progress=progress)
    data = [row.as_dict() for row in rows]
    table = Table(title=f"fusion grid: {dataset_dir(dataset).name}/{split}, "
                        f"{rows[0].queries} queries, top {k} chunks")
    for column in ("setting", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "run_id"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in data:
        table.add_row(row["label"], *(f"{row[m]:.4f}" for m in
                                      ("ndcg@10", "recall@10", "recall@100", "mrr@10")),
                      str(row["run_id"]))
    console.print(table)
    if as_json:
        emit_json({"ok": True, "dataset": dataset_dir(dataset).name, "split": split, "k": k,
                   "points": data})


def hybrid_latency(
    tenant: TenantOption,
    dataset: DatasetOption = Path("scifact"),
    split: SplitOption = "test",
    rounds: Annotated[int, typer.Option(min=1, max=50, help="passes over the queries")] = 3,
    k: Annotated[int, typer.Option(min=1, max=1000, help="chunks retrieved per query")] = 100,
    limit_queries: Annotated[int | None, typer.Option(
        min=1, help="only the first N judged queries")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Dense vs hybrid (RAG_HYBRID__*) latency in one process, interleaved per query, the
    order alternating per round: p50, p95 and the p95 ratio, with the load average."""
    from evaluations.retrieval.fusion_grid import interleaved_latency

    with Platform(get_settings()) as platform, stage_progress(
            {"latency": "queries x rounds"}) as progress:
        result = interleaved_latency(platform.settings, platform.database, platform.embedder,
                                     dataset_dir(dataset), split, tenant, rounds=rounds, k=k,
                                     limit_queries=limit_queries, progress=progress)
    data = result.as_dict()
    console.print(
        f"{data['queries']} queries x {data['rounds']} rounds, top {data['k']} chunks: dense "
        f"p50 {data['dense_p50_ms']} ms, p95 {data['dense_p95_ms']} ms; hybrid p50 "
        f"{data['hybrid_p50_ms']} ms, p95 {data['hybrid_p95_ms']} ms; p95 ratio "
        f"{data['p95_ratio']} (load average {data['load_before'][0]:.2f} before, "
        f"{data['load_after'][0]:.2f} after; {data['cpu']})", highlight=False)
    if as_json:
        emit_json({"ok": True} | data)


def register(app: typer.Typer) -> None:
    app.command("fusion-grid")(fail_cleanly(fusion_grid))
    app.command("hybrid-latency")(fail_cleanly(hybrid_latency))
