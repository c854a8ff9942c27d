"""Arbitrary bytes in a questions file end in questions or in a named error, never in another
exception (the CLI would print a traceback file for it, exit 70)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_core.errors import InputTooLargeError, QuestionFileError
from rag_core.query.batch_run import read_questions

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINES = st.lists(st.one_of(
    st.binary(max_size=120),
    st.sampled_from([b'{"_id": "1", "text": "q?"}', b'{"id": 2, "question": "r?"}',
                     b"id,question", b"1,what?", b'"2","why\x00?"', b"[1, 2]", b"null",
                     b'{"_id": "1"}', b'{"text": ""}', b"\xff\xfe"]),
), max_size=10).map(b"\n".join)


@FUZZ
@given(LINES, st.sampled_from(["questions.jsonl", "questions.csv"]))
def test_any_bytes_give_questions_or_a_named_error(payload: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(payload)
        try:
            questions = read_questions(path, max_questions=5)
        except (QuestionFileError, InputTooLargeError) as exc:
            assert str(path) in str(exc)
        else:
            assert len(questions) <= 5
            assert all(q.text.strip() and q.question_id is not None for q in questions)


def test_a_nul_byte_in_a_csv_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "questions.csv"
    path.write_bytes(b'id,question\n1,"why\x00?"\n')
    with pytest.raises(QuestionFileError, match="row 2: contains a NUL character"):
        read_questions(path)
