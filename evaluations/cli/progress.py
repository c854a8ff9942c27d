"""The progress bars of the ``rag eval`` commands that ingest a corpus and then ask its
queries: one bar per stage, drawn only on a terminal (never into ``--json`` output)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evaluations.common.tenant_runs import ProgressCallback
from rag_core.cli._output import console

__all__ = ["stage_progress"]


@contextmanager
def stage_progress(labels: Mapping[str, str]) -> Iterator[ProgressCallback]:
    """A ``(stage, done, total)`` callback drawing a bar per stage, titled ``labels[stage]``.
    The ``ingest`` stage reports documents stored since its last call, the others how many
    are done so far."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total or None)
            if stage == "ingest":
                bar.advance(tasks[stage], done)
            else:
                bar.update(tasks[stage], completed=done)

        yield progress
