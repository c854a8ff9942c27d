"""Batch question runs: read questions (JSONL or CSV), answer them in groups through the
query service, write one JSON line per answer (with sources and per-question tokens), and
summarise. Shared by ``rag batch`` and the ``batch-query`` flow."""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rag_core.common.paths import confine, output_path, write_private
from rag_core.common.tenancy import TenantId
from rag_core.errors import InputTooLargeError, QuestionFileError, unstorable_text
from rag_core.query.service import QueryService


@dataclass(frozen=True)
class Question:
    question_id: str
    text: str


def read_questions(path: Path, limit: int | None = None, *,
                   max_questions: int | None = None) -> list[Question]:
    """JSONL lines with ``id``/``_id`` and ``question``/``text`` (BEIR queries work), or a
    CSV with ``id`` and ``question`` columns. Reading stops after ``limit`` questions; a file
    with more than ``max_questions`` (after ``limit``) is refused."""
    if not path.exists():
        raise QuestionFileError(str(path), "no such file")
    if not path.is_file():
        raise QuestionFileError(str(path), "not a file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise QuestionFileError(str(path), "expected .jsonl or .csv")
    wanted = limit if max_questions is None else min(limit or max_questions + 1,
                                                      max_questions + 1)
    try:
        questions = list(itertools.islice(_csv(path) if suffix == ".csv" else _jsonl(path),
                                          wanted))
    except UnicodeDecodeError as exc:
        raise QuestionFileError(str(path), f"not UTF-8 text ({exc.reason} at byte "
                                           f"{exc.start})") from exc
    except OSError as exc:
        raise QuestionFileError(str(path), f"cannot be read: {exc.strerror}") from exc
    if max_questions is not None and len(questions) > max_questions:
        raise InputTooLargeError(f"questions file {str(path)!r}", len(questions), max_questions,
                                 "or more questions", "RAG_MAX_BATCH_QUESTIONS; or use --limit")
    ids = [q.question_id for q in questions]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise QuestionFileError(str(path), f"duplicate question id {duplicate!r}")
    return questions


def _jsonl(path: Path) -> Iterator[Question]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                qid = obj.get("id", obj.get("_id"))
                text = obj.get("question", obj.get("text"))
            except (json.JSONDecodeError, AttributeError) as exc:
                raise QuestionFileError(str(path), f"line {line_no}: {exc}") from exc
            if qid is None or not isinstance(text, str) or not text.strip():
                raise QuestionFileError(str(path), f"line {line_no}: needs an id and a "
                                                   "non-empty question")
            yield Question(_checked(path, f"line {line_no}", str(qid)),
                           _checked(path, f"line {line_no}", text))


def _csv(path: Path) -> Iterator[Question]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"id", "question"} <= set(reader.fieldnames):
            raise QuestionFileError(str(path), "CSV needs 'id' and 'question' columns")
        for row_no, row in enumerate(reader, start=2):
            if not (row.get("question") or "").strip():
                raise QuestionFileError(str(path), f"row {row_no}: empty question")
            yield Question(_checked(path, f"row {row_no}", str(row["id"])),
                           _checked(path, f"row {row_no}", str(row["question"])))


def _checked(path: Path, where: str, text: str) -> str:
    problem = unstorable_text(text)
    if problem is not None:
        raise QuestionFileError(str(path), f"{where}: {problem}")
    return text


@dataclass
class BatchSummary:
    questions: int = 0
    answered: int = 0
    cache_hits: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    output: str | None = None

    def record(self, answer: Mapping[str, Any]) -> None:
        """Count one answer (as written to the answers file)."""
        code = answer["error_code"]
        if code is None and answer["answer"]:
            self.answered += 1
        if code is not None:
            self.errors[code] = self.errors.get(code, 0) + 1
        self.cache_hits += int(answer["cache_hit"])
        self.prompt_tokens += answer["prompt_tokens"]
        self.completion_tokens += answer["completion_tokens"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer_group(service: QueryService, tenant: TenantId, questions: Sequence[Question], *,
                 include_question: bool = False,
                 parent_request_id: str | None = None) -> list[dict[str, Any]]:
    """Answer one group of questions as JSON-ready answers, in the group's order: the one
    step shared by ``rag batch``, the ``batch-query`` flow and the API's batch jobs.

    ``keep_going``: a dependency outage (the database restarting, say) fails this group's
    questions with their typed code (audited or spooled) and returns them, so the caller
    goes on with its next group rather than leaving the rest unasked; what still raises is
    a refusal or a bug. ``parent_request_id`` (a batch job's id) links the group's audit
    rows to the job. The raw question only with ``include_question`` (it may hold personal
    data the audit log only keeps redacted)."""
    answers = service.ask_many(tenant, [q.text for q in questions],
                               question_ids=[q.question_id for q in questions],
                               keep_going=True, parent_request_id=parent_request_id)
    return [a.as_dict(include_question=include_question) for a in answers]


def run_batch(service: QueryService, tenant: TenantId, questions: list[Question],
              out: TextIO | None, *, group_size: int = 25,
              progress: Callable[[int], None] | None = None,
              include_question: bool = False) -> BatchSummary:
    """Answer ``questions`` in groups of ``group_size`` (each group is batched ≤5 per LLM
    call by the service), writing one JSON line per answer to ``out``."""
    summary = BatchSummary(questions=len(questions))
    started = time.perf_counter()
    for offset in range(0, len(questions), group_size):
        group = questions[offset:offset + group_size]
        for payload in answer_group(service, tenant, group,
                                    include_question=include_question):
            summary.record(payload)
            if out is not None:
                out.write(json.dumps(payload) + "\n")
        if progress:
            progress(len(group))
    summary.wall_s = round(time.perf_counter() - started, 3)
    return summary


@dataclass(frozen=True)
class BatchFiles:
    """The files of a batch run named by a caller that is not the local user (the
    ``batch-query`` flow, the API): questions only from under ``questions_roots``, answers
    only into ``outputs_dir`` (see :mod:`rag_core.common.paths`). ``rag batch`` (the local
    user's) reads and writes where it is told."""

    questions_roots: tuple[Path, ...]
    outputs_dir: Path
    max_questions: int | None = None

    def read_questions(self, path: Path | str, limit: int | None = None) -> list[Question]:
        """The questions of ``path``, refused before it is opened when outside the roots."""
        confined = confine(path, self.questions_roots, setting="RAG_QUESTIONS_ROOTS")
        return read_questions(confined, limit, max_questions=self.max_questions)

    def answers_path(self, output: str | None, questions: Path | str) -> Path:
        """Where the answers go: ``output`` under ``outputs_dir``, by default the questions
        file's stem + ``.answers.jsonl``."""
        name = output if output is not None else \
            Path(questions).with_suffix(".answers.jsonl").name
        return output_path(name, self.outputs_dir)

    def write_answers(self, path: Path) -> AbstractContextManager[TextIO]:
        """``path`` written 0600, replaced only once complete (``write_private``)."""
        return write_private(path)
