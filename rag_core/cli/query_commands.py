"""``rag query`` and ``rag batch``: the query path from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.common.paths import write_private
from rag_core.common.tenancy import parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.query.batch_run import read_questions, run_batch

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
IncludeQuestion = Annotated[bool, typer.Option(
    "--include-question", help="also write the raw question (it may hold personal data)")]


def register(app: typer.Typer) -> None:
    @app.command()
    @fail_cleanly
    def query(
        question: Annotated[str, typer.Argument(help="the question")],
        tenant: Annotated[str, typer.Option("--tenant")],
        session: Annotated[str | None, typer.Option(help="an opaque session id")] = None,
        include_question: IncludeQuestion = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Answer one question from the tenant's documents."""
        tenant_id = parse_tenant_id(tenant)
        with Platform(get_settings()) as platform:
            answer = platform.query_service.ask(tenant_id, question, session)
        if answer.error_code:
            console.print(f"[bold red]{answer.error_code}[/]: {answer.error}")
        else:
            console.print(answer.answer or "", highlight=False)
            for source in answer.sources:
                console.print(f"  [{source.chunk_id}] score {source.score:.3f}: "
                              f"{source.excerpt[:100]}", highlight=False)
        if as_json:
            emit_json(answer.as_dict(include_question=include_question))
        if answer.error_code:
            raise typer.Exit(code=1)

    @app.command()
    @fail_cleanly
    def batch(
        questions_file: Annotated[Path, typer.Argument(help="questions .jsonl or .csv")],
        tenant: Annotated[str, typer.Option("--tenant")],
        out: Annotated[Path | None, typer.Option(help="answers .jsonl (default: beside the "
                                                      "input, *.answers.jsonl)")] = None,
        limit: Annotated[int | None, typer.Option(min=1, help="first N questions")] = None,
        include_question: IncludeQuestion = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Answer a file of questions in batches (≤5 questions per LLM call)."""
        tenant_id = parse_tenant_id(tenant)
        settings = get_settings()
        questions = read_questions(questions_file, limit,
                                   max_questions=settings.max_batch_questions)
        out = out or questions_file.with_suffix(".answers.jsonl")
        # 0600, and replaces the previous answers only once complete (a failed run
        # keeps them).
        with Platform(settings) as platform, write_private(out) as handle:
            service = platform.query_service
            with Progress(TextColumn("answering"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console,
                          disable=not console.is_terminal) as bar:
                task = bar.add_task("answering", total=len(questions))
                summary = run_batch(service, tenant_id, questions, handle,
                                    progress=lambda n: bar.advance(task, n),
                                    include_question=include_question)
        summary.output = str(out)
        console.print(f"{summary.answered}/{summary.questions} answered, "
                      f"{summary.cache_hits} from cache, errors {summary.errors or 'none'}, "
                      f"tokens {summary.prompt_tokens}+{summary.completion_tokens}, "
                      f"{summary.wall_s}s → {out}")
        if as_json:
            emit_json(summary.as_dict())
