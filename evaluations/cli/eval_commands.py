"""``rag eval …``: quality evaluations that print metrics (never run as tests).

Register with ``app.add_typer(eval_commands.eval_app, name="eval")``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evaluations.cli import eval_answers, eval_fusion
from evaluations.cli.datasets import DATASET_HELP, dataset_dir
from evaluations.cli.progress import stage_progress
from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings, scifact_dir

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
DEFAULT_DATASET = scifact_dir()

eval_app = typer.Typer(help="Evaluations (print metrics; not part of the test suite).",
                       no_args_is_help=True)
eval_fusion.register(eval_app)
eval_answers.register(eval_app)


class RetrievalMode(StrEnum):
    dense = "dense"
    hybrid = "hybrid"


class DocumentScore(StrEnum):
    best_chunk = "best-chunk"
    first_chunk = "first-chunk"


@eval_app.command("retrieval")
@fail_cleanly
def eval_retrieval(
    dataset: Annotated[Path, typer.Option(help=DATASET_HELP)] = DEFAULT_DATASET,
    split: Annotated[str, typer.Option(help="qrels split (qrels/<split>.tsv)")] = "test",
    mode: Annotated[RetrievalMode, typer.Option(
        help="dense (pgvector) or hybrid (dense + full text, weighted RRF: RAG_HYBRID__*)")]
    = RetrievalMode.dense,
    limit_queries: Annotated[int | None, typer.Option(
        min=1, help="only the first N judged queries")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000, help="chunks retrieved per query")] = 100,
    keep_tenant: Annotated[bool, typer.Option(
        help="keep the evaluation tenant (and its data) afterwards")] = False,
    tenant: Annotated[str | None, typer.Option(
        help="evaluate in this existing tenant (e.g. one kept by --keep-tenant) instead of "
             "a fresh one: documents already stored are not embedded again; never deleted")]
    = None,
    document_score: Annotated[DocumentScore, typer.Option(
        help="a document's score: its best chunk's, or its first chunk's only (MTEB's "
             "truncated document; use with --k 1000)")] = DocumentScore.best_chunk,
    as_json: JsonFlag = False,
) -> None:
    """Ingest a BEIR corpus into a fresh tenant, run the split's queries through the real
    retriever, print nDCG@10, Recall@10/100 and MRR@10 (recorded in rag.benchmark_runs)."""
    from evaluations.retrieval.evaluation import run_retrieval_eval

    with Platform(get_settings()) as platform, stage_progress(
            {"ingest": "ingest documents", "search": "queries"}) as progress:
        result = run_retrieval_eval(platform.settings, platform.database, platform.embedder,
                                    dataset_dir(dataset), split,
                                    mode.value, k, limit_queries, keep_tenant=keep_tenant,
                                    tenant=tenant,
                                    document_score="first_chunk"
                                    if document_score is DocumentScore.first_chunk
                                    else "best_chunk",
                                    progress=progress)
    data = result.as_dict()
    _print(data)
    if as_json:
        emit_json(data)


def _print(result: dict[str, Any]) -> None:
    table = Table(title=f"retrieval: {result['dataset']}/{result['split']}, {result['mode']}, "
                        f"top {result['k']} chunks, document score "
                        f"{result['config']['document_score'].replace('_', ' ')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        table.add_row(metric, f"{result[metric]:.4f}")
    console.print(table)
    timings = result["timings"]
    console.print(
        f"{result['queries']} queries, {result['docs']} documents / {result['chunks']} chunks "
        f"(rejected {result['rejected']}, judged but not ingested "
        f"{result['judged_docs_not_ingested']}), {result['docs_per_query']} documents per "
        f"query, plans {result['plans']}, short results {result['short_results']}; ingest "
        f"{timings['ingest_s']}s, search {timings['search_s']}s (p50 "
        f"{timings['query_ms_p50']} ms), run_id {result['run_id']}, tenant "
        f"{result['tenant_id']}{' (kept)' if result['tenant_kept'] else ' (deleted)'}",
        highlight=False)


@eval_app.command("bad-inputs")
@fail_cleanly
def eval_bad_inputs(
    keep_tenant: Annotated[bool, typer.Option(
        help="keep the probe tenant (and its data) afterwards")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Try bad inputs (gzip bomb, deep JSON, NUL, symlink escape, oversized questions and
    batches, torn lines, bad tenants) through `rag … --json` in child processes; print the
    code each one got and the tenant's row counts before and after it."""
    from evaluations.hardening.probe import as_json as rows_as_json
    from evaluations.hardening.probe import as_markdown, run_probes

    rows = run_probes(get_settings(), keep_tenant=keep_tenant)
    console.print(as_markdown(rows), highlight=False, markup=False)
    if as_json:
        emit_json({"probes": rows_as_json(rows),
                   "tracebacks": sum(r.traceback_seen for r in rows)})
