"""``rag eval answers``: answer quality of the real query path, scored with ragas (see
``evaluations/answers/evaluation.py``). Mounted on ``rag eval`` by :func:`register`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evaluations.cli.progress import stage_progress
from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings, scifact_dir

__all__ = ["register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
DEFAULT_DATASET = scifact_dir()


class AnswerMode(StrEnum):
    dense = "dense"
    hybrid = "hybrid"


def register(app: typer.Typer) -> None:
    """Add ``answers`` to ``app`` (``rag eval``)."""
    app.command("answers")(eval_answers)


@fail_cleanly
def eval_answers(
    dataset: Annotated[Path, typer.Option(
        help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv")]
    = DEFAULT_DATASET,
    split: Annotated[str, typer.Option(help="qrels split (qrels/<split>.tsv)")] = "test",
    mode: Annotated[AnswerMode | None, typer.Option(
        help="retrieval: dense or hybrid (default: RAG_RETRIEVAL_MODE)")] = None,
    limit_queries: Annotated[int | None, typer.Option(
        min=1, help="only the first N judged queries")] = None,
    k: Annotated[int | None, typer.Option(
        min=1, max=100, help="chunks retrieved per claim (default: RAG_RETRIEVAL_K)")] = None,
    prompt_version: Annotated[str | None, typer.Option(
        help="the LLM answerer's prompt version (default: the current one)")] = None,
    keep_tenant: Annotated[bool, typer.Option(
        help="keep the evaluation tenant (and its data) afterwards")] = False,
    tenant: Annotated[str | None, typer.Option(
        help="evaluate in this existing tenant (e.g. one kept by --keep-tenant): documents "
             "already stored are not embedded again; never deleted")] = None,
    judge_base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible endpoint (…/v1) judging faithfulness and answer relevancy "
             "(default: RAG_EVAL__JUDGE_BASE_URL; its key: RAG_EVAL__JUDGE_API_KEY)")] = None,
    judge_model: Annotated[str | None, typer.Option(
        help="the judge's model (default: RAG_EVAL__JUDGE_MODEL)")] = None,
    judge_rpm: Annotated[int | None, typer.Option(
        min=1, help="judge requests per minute (default: "
                    "RAG_EVAL__JUDGE_REQUESTS_PER_MINUTE, 30)")] = None,
    judge_concurrency: Annotated[int | None, typer.Option(
        min=1, max=64, help="judge requests in flight (default: "
                            "RAG_EVAL__JUDGE_MAX_CONCURRENCY, 2)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask a BEIR split's claims through the real query path (retrieval, prompt, answerer)
    and score the answers with ragas: context precision/recall against the qrels offline,
    faithfulness and answer relevancy with a judge (recorded in rag.benchmark_runs)."""
    from evaluations.answers.evaluation import run_answer_eval
    from evaluations.answers.judge import JudgeSettings

    overrides: dict[str, Any] = {name: value for name, value in (
        ("base_url", judge_base_url), ("model", judge_model),
        ("requests_per_minute", judge_rpm), ("max_concurrency", judge_concurrency))
        if value is not None}
    judge = JudgeSettings(**overrides)
    with Platform(get_settings()) as platform, stage_progress(
            {"ingest": "ingest documents", "answers": "claims"}) as progress:
        result = run_answer_eval(platform.settings, platform.database, platform.embedder,
                                 dataset, split, mode=mode.value if mode else None, k=k,
                                 limit_queries=limit_queries, prompt_version=prompt_version,
                                 keep_tenant=keep_tenant, tenant=tenant, judge=judge,
                                 progress=progress)
    data = result.as_dict()
    _print_answers(data)
    if as_json:
        emit_json(data)


def _print_answers(result: dict[str, Any]) -> None:
    run = result["settings"]
    table = Table(title=f"answers: {run['dataset']}/{run['split']}, {run['retrieval_mode']}, "
                        f"top {run['k']} chunks, {run['answerer']} answerer ({run['model']}, "
                        f"{run['prompt_version']})")
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("claims scored", justify="right")
    for name, value in result["metrics"].items():
        counts = result["metric_counts"][name]
        shown = "failed" if counts["failed"] else "n/a" if value is None else f"{value:.4f}"
        table.add_row(name, shown, str(counts["scored"]))
    for name, reason in result["skipped_metrics"].items():
        table.add_row(name, "skipped", reason)
    console.print(table)
    counts, timings = result["counts"], result["timings"]
    console.print(
        f"{counts['queries']} claims, {counts['answered']} answered, errors "
        f"{counts['errors'] or 'none'}; {counts['docs']} documents (judged but not ingested "
        f"{counts['judged_docs_not_ingested']}); ingest {timings['ingest_s']}s, answers "
        f"{timings['answer_s']}s ({timings['claims_per_s']} claims/s), scoring "
        f"{timings['score_s']}s; run_id {result['run_id']}, tenant {result['tenant_id']}"
        f"{' (kept)' if result['tenant_kept'] else ' (deleted)'}", highlight=False)
    if result["judge_calls"] is not None:
        console.print(f"judge calls: {result['judge_calls']}", highlight=False)
    for name, reason in result["failed_metrics"].items():
        console.print(f"[yellow]{name} failed: {reason}[/yellow]")
