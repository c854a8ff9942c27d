"""Bounded inputs: an oversized question or batch, or an over-long questions file, is refused
with a named error carrying the value and the limit, before any work; the refusal itself is
audited, one row per question, and nothing else is touched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.db.pool import Database
from rag_core.errors import InputTooLargeError, InvalidQuestionError, QuestionFileError
from rag_core.query.batch_run import read_questions
from rag_core.query.service import QueryService
from tests.query.conftest import audit_rows, last_audit_id


def _questions_file(folder: Path, count: int) -> Path:
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps({"_id": f"q{i}", "text": f"question {i}?"}) + "\n"
                            for i in range(count)))
    return path


def test_a_long_question_or_a_large_batch_is_refused_before_any_work(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        db: Database) -> None:
    service = make_service(max_question_chars=50, max_batch_questions=3)
    before = last_audit_id(db, corpus_tenant)
    with pytest.raises(InputTooLargeError) as long_one:
        service.ask_many(corpus_tenant, ["short?", "x" * 51])
    assert (long_one.value.value, long_one.value.limit) == (51, 50)
    assert long_one.value.code is ErrorCode.INPUT_TOO_LARGE
    assert "question 2" in str(long_one.value) and "RAG_MAX_QUESTION_CHARS" in str(long_one.value)
    with pytest.raises(InputTooLargeError) as many:
        service.ask_many(corpus_tenant, ["a?", "b?", "c?", "d?"])
    assert (many.value.value, many.value.limit) == (4, 3)
    rows = audit_rows(db, corpus_tenant, before)
    assert [(r["kind"], r["error_code"]) for r in rows] == \
        [("batch", "partial"), ("sub_query", "input_too_large"), ("sub_query", "input_too_large")] \
        + [("batch", "partial")] + [("sub_query", "input_too_large")] * 4
    assert all(r["question_redacted"] is None and r["chunk_ids"] == [] for r in rows)
    assert service.ask(corpus_tenant, "x" * 50).error_code is None  # at the limit: answered


def test_a_questions_file_is_read_only_up_to_its_limit(tmp_path: Path) -> None:
    path = _questions_file(tmp_path, 10)
    assert [q.question_id for q in read_questions(path, 3, max_questions=5)] == \
        ["q0", "q1", "q2"]
    with pytest.raises(InputTooLargeError) as too_many:
        read_questions(path, max_questions=5)
    assert too_many.value.limit == 5 and str(path) in str(too_many.value)
    with pytest.raises(InputTooLargeError):
        read_questions(path, 8, max_questions=5)  # a limit above the maximum is no way round
    assert len(read_questions(path, max_questions=10)) == 10


def test_a_questions_file_that_is_not_utf8_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_bytes(b'{"_id": "q1", "text": "caf\xe9?"}\n')
    with pytest.raises(QuestionFileError, match="not UTF-8"):
        read_questions(path)


def test_a_question_that_cannot_be_stored_is_refused_and_audited(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        db: Database) -> None:
    # NUL cannot go into PostgreSQL text: accepted, it would poison the audit spool
    before = last_audit_id(db, corpus_tenant)
    for question in ("why\x00?", "half \ud800 a pair?"):
        with pytest.raises(InvalidQuestionError) as refused:
            make_service().ask(corpus_tenant, question)
        assert refused.value.code is ErrorCode.INVALID_QUESTION
    rows = audit_rows(db, corpus_tenant, before)
    assert [(r["error_code"], r["question_redacted"]) for r in rows] == \
        [("invalid_question", None)] * 2
