"""``rag bench redaction``: retrieval alone vs retrieval + passage redaction, per query.

Wired into ``rag bench`` by ``bench_redaction.register(bench_app)``; the work is done by
:func:`evaluations.query.passage_redaction.run_passage_redaction_benchmark`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings

__all__ = ["bench_redaction", "register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def register(bench_app: typer.Typer) -> None:
    """Add ``redaction`` to the ``rag bench`` command group."""
    bench_app.command("redaction")(bench_redaction)


@fail_cleanly
def bench_redaction(
    quick: Annotated[bool, typer.Option(
        "--quick", help="15 documents, 5 questions, 1 round (a smoke test)")] = False,
    docs: Annotated[int | None, typer.Option(min=5, help="SciFact abstracts (default 500)")]
    = None,
    questions: Annotated[int | None, typer.Option(min=1, help="claims asked (default 100)")]
    = None,
    rounds: Annotated[int | None, typer.Option(min=1, max=100, help="timed rounds (default 5)")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """What RAG_REDACT_PASSAGES costs: ms per query with passage redaction off and on
    (k=5 passages of real SciFact abstracts, the same run, interleaved)."""
    from evaluations.query.passage_redaction import (
        RedactionBenchConfig,
        run_passage_redaction_benchmark,
    )

    config = RedactionBenchConfig.quick() if quick else RedactionBenchConfig()
    config = dataclasses.replace(config, docs=docs or config.docs,
                                 questions=questions or config.questions,
                                 rounds=rounds or config.rounds)
    settings = get_settings()
    with Platform(settings) as platform, tempfile.TemporaryDirectory() as folder:
        result = run_passage_redaction_benchmark(platform, config, Path(folder))
    data = result.as_dict()
    console.print(
        f"{data['queries_timed']} queries, k={data['k']} passages of {data['docs']} SciFact "
        f"abstracts (mean {data['mean_passage_chars']} chars): retrieval "
        f"{data['off_ms_per_query_p50']} ms/query p50, with redaction "
        f"{data['on_ms_per_query_p50']} ms/query (ratio {data['ratio_on_off_p50']}); "
        f"redaction alone {data['redact_ms_per_query_p50']} ms p50, "
        f"{data['redact_ms_per_query_p95']} ms p95; passages changed "
        f"{data['passages_changed']}/{data['passages']} {data['findings']}")
    if as_json:
        emit_json(data)
