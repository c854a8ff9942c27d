"""Great Expectations validation of record batches: reasons, line numbers, duplicates."""

from __future__ import annotations

from rag_core.common.tenancy import new_tenant_id
from rag_core.ingestion.sources import SourceRecord
from rag_core.ingestion.validation import RecordValidator, ValidationPolicy


def _record(line: int, rid: str | None, text: str, title: str = "t",
            problem: str | None = None) -> SourceRecord:
    return SourceRecord("c.jsonl", line, rid, title, text, problem=problem)


def test_each_bad_record_is_rejected_with_its_reason_and_the_rest_pass() -> None:
    validator = RecordValidator(ValidationPolicy(max_text_chars=50, max_title_chars=10))
    records = [
        _record(1, "a", "good text"),
        _record(2, None, "", problem="malformed JSON: Expecting value at column 3"),
        _record(3, "b", "   \n  "),
        _record(4, "c", "x" * 51),
        _record(5, "d", "has a \x00 NUL"),
        _record(6, "e", "fine", title="far too long a title"),
        _record(7, "a", "same id as line 1"),
        _record(8, "f", "also good"),
    ]
    outcome = validator.validate(str(new_tenant_id()), records)
    assert [r.record_id for r in outcome.accepted] == ["a", "f"]
    reasons = {r.record.line_no: r.reason for r in outcome.rejected}
    assert reasons == {
        2: "malformed JSON: Expecting value at column 3",
        3: "text length outside [1, 50] characters after trimming (got 0)",
        4: "text length outside [1, 50] characters after trimming (got 51)",
        5: "text contains NUL characters",
        6: "title longer than 10 characters",
        7: "duplicate id 'a' (first at line 1)",
    }


def test_duplicates_are_caught_across_batches() -> None:
    validator = RecordValidator()
    tenant = str(new_tenant_id())
    assert len(validator.validate(tenant, [_record(1, "x", "one")]).accepted) == 1
    second = validator.validate(tenant, [_record(9, "x", "again"), _record(10, "y", "new")])
    assert [r.record_id for r in second.accepted] == ["y"]
    assert second.rejected[0].reason == "duplicate id 'x' (first at line 1)"


def test_invalid_tenant_rejects_everything() -> None:
    outcome = RecordValidator().validate("tn_NOT-VALID", [_record(1, "a", "text")])
    assert outcome.accepted == []
    assert outcome.rejected[0].reason == "invalid tenant id"
