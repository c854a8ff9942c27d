"""PII redaction: the labelled set, look-alikes, placeholders, idempotence, offline imports."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluations.pii_report import Case, evaluate, format_table, gold_spans, load_cases
from rag_core.errors import ConfigurationError
from rag_core.pii import (
    PLACEHOLDERS,
    EntityType,
    Finding,
    PiiRedactor,
    find_pii,
    iban_is_valid,
    luhn_is_valid,
    redact,
    ssn_is_valid,
)

CASES = load_cases()
LOOKALIKES = [case for case in CASES if case.is_lookalike]
POSITIVES = [case for case in CASES if not case.is_lookalike]
PLACEHOLDER_RE = re.compile(r"\[(?:EMAIL|PHONE|CARD|IBAN|SSN|IP)\]")


def _id(case: Case) -> str:
    return case.note[:60]


def test_labelled_set_is_large_and_covers_every_entity() -> None:
    assert len(CASES) >= 200
    assert len(LOOKALIKES) >= 80
    kinds = {kind for case in CASES for kind, _ in case.entities}
    assert kinds == {kind.value for kind in EntityType}
    for case in CASES:
        gold_spans(case)  # every labelled value occurs in its text


def test_precision_and_recall_on_the_labelled_set(capsys: pytest.CaptureFixture[str]) -> None:
    report = evaluate(CASES)
    with capsys.disabled():
        print("\n" + format_table(report, "rag_core.pii.redactor on rag_core/data/pii_cases.jsonl"))
    assert report.overall.precision >= 0.95, report.errors
    assert report.overall.recall >= 0.95, report.errors
    for kind, counts in report.per_entity.items():
        assert counts.tp > 0, kind
        assert counts.precision >= 0.9 and counts.recall >= 0.9, (kind, report.errors)


@pytest.mark.parametrize("case", LOOKALIKES, ids=_id)
def test_lookalikes_stay_unredacted(case: Case) -> None:
    result = redact(case.text)
    assert result.findings == []
    assert result.text == case.text


@pytest.mark.parametrize("case", [c for c in CASES if c.keep], ids=_id)
def test_lookalikes_next_to_pii_survive(case: Case) -> None:
    redacted = redact(case.text).text
    for value in case.keep:
        assert value in redacted


@pytest.mark.parametrize("case", POSITIVES, ids=_id)
def test_redacted_text_contains_no_original_value(case: Case) -> None:
    result = redact(case.text)
    for _, value in case.entities:
        assert value not in result.text
        compact = re.sub(r"[\s\-.()]", "", value)
        assert compact not in re.sub(r"[\s\-.()]", "", result.text)


@pytest.mark.parametrize("case", POSITIVES, ids=_id)
def test_placeholders_replace_exactly_the_findings(case: Case) -> None:
    result = redact(case.text)
    assert result.findings, case.text
    placeholders = PLACEHOLDER_RE.findall(result.text)
    assert placeholders == [PLACEHOLDERS[f.entity_type] for f in result.findings]
    # rebuilding from the findings gives the redacted text; spans are in the original text
    rebuilt, position = [], 0
    for finding in result.findings:
        assert 0 <= position <= finding.start < finding.end <= len(case.text)
        rebuilt += [case.text[position:finding.start], f"[{finding.entity_type.value}]"]
        position = finding.end
    rebuilt.append(case.text[position:])
    assert "".join(rebuilt) == result.text
    assert {(f.entity_type.value, f.start, f.end) for f in result.findings} >= gold_spans(case)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_redaction_is_idempotent(case: Case) -> None:
    once = redact(case.text)
    twice = redact(once.text)
    assert twice.text == once.text
    assert twice.findings == []


def test_example_sentence() -> None:
    text = ("Mail jane.doe@example.com or call +44 20 7946 0958; card 4111-1111-1111-1111, "
            "IBAN DE89 3704 0044 0532 0130 00, SSN 536-22-1847, from 2001:db8::1.")
    result = redact(text)
    assert result.text == ("Mail [EMAIL] or call [PHONE]; card [CARD], IBAN [IBAN], SSN [SSN], "
                           "from [IP].")
    assert [f.entity_type for f in result.findings] == [
        EntityType.EMAIL, EntityType.PHONE, EntityType.CARD, EntityType.IBAN, EntityType.SSN,
        EntityType.IP]
    assert result.findings[0] == Finding(EntityType.EMAIL, 5, 25)
    assert result.counts == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "IBAN": 1, "SSN": 1, "IP": 1}
    assert find_pii(text) == result.findings


def test_empty_and_plain_text() -> None:
    assert redact("").text == ""
    assert redact("nothing to see here").findings == []


def test_overlap_prefers_the_longest_validated_span() -> None:
    # the IBAN contains card-like and phone-like digit runs; only the IBAN is reported
    text = "IBAN GB82 WEST 1234 5698 7654 32 ok"
    assert [f.entity_type for f in redact(text).findings] == [EntityType.IBAN]
    # an IPv4-mapped IPv6 address is one IP, not an IPv6 plus an IPv4
    findings = redact("peer ::ffff:192.0.2.128 up").findings
    assert findings == [Finding(EntityType.IP, 5, 23)]


def test_checksum_helpers() -> None:
    assert luhn_is_valid("4111111111111111")
    assert not luhn_is_valid("4111111111111112")
    assert not luhn_is_valid("4111-1111")
    assert iban_is_valid("DE89 3704 0044 0532 0130 00")
    assert iban_is_valid("gb82west12345698765432")
    assert not iban_is_valid("DE88 3704 0044 0532 0130 00")
    assert not iban_is_valid("DE89 3704 0044 0532 0130 0")  # wrong length for DE
    assert ssn_is_valid("536-22-1847")
    for bad in ("000-22-1847", "666-22-1847", "900-22-1847", "536-00-1847", "536-22-0000",
                "53622184"):
        assert not ssn_is_valid(bad)


def test_redactor_configuration() -> None:
    only_email = PiiRedactor(entities=["EMAIL"])
    result = only_email.redact("a@example.com 192.0.2.1")
    assert result.text == "[EMAIL] 192.0.2.1"
    us_only = PiiRedactor(phone_regions=["US"])
    assert us_only.redact("020 7946 0321").findings == []  # UK national format
    assert us_only.redact("+44 20 7946 0321").text == "[PHONE]"  # international: any region
    with pytest.raises(ConfigurationError) as caught:
        PiiRedactor(entities=["EMAIL", "NAME"])
    assert caught.value.value == ["NAME"]
    with pytest.raises(ConfigurationError):
        PiiRedactor(phone_regions=["XX"])


def test_dense_and_number_free_texts_in_one_call() -> None:
    # Speed is measured by `python -m evaluations.pii_report` (ms per case), not asserted here.
    dense = " ".join(case.text for case in CASES[:40])  # ~1.5 kB, dense with PII
    once = redact(dense)
    assert len(once.findings) >= 40
    assert redact(once.text).findings == []  # nothing left to find in the redacted text
    prose = "retrieval augmented generation without any numbers at all " * 30
    assert redact(prose).text == prose and redact(prose).findings == []


def test_import_is_offline_and_light() -> None:
    """The redactor must not import Presidio, spaCy, torch or tldextract (network on use)."""
    code = ("import sys, rag_core.pii.redactor as p; p.redact('a@example.com +1 212 555 0134'); "
            "heavy = [m for m in ('presidio_analyzer', 'spacy', 'torch', 'transformers', "
            "'tldextract') if m in sys.modules]; print(heavy); assert not heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


_FRAGMENTS = [
    "jane.doe@example.com", "+44 20 7946 0958", "(212) 555-0147", "4111 1111 1111 1111",
    "4111-1111-1111-1112", "DE89 3704 0044 0532 0130 00", "DE88370400440532013000",
    "536-22-1847", "900-12-3456", "192.0.2.44", "2001:db8::1", "::ffff:192.0.2.1",
    "version 1.2.3.4", "[EMAIL]", "[IP]", "icon@2x.png", "120/80", "ISBN 0-306-40615-2",
]
_GLUE = st.sampled_from([" ", "", ",", ".", ":", "-", "/", "@", "[", "]", "\n", "x", "0", "7"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_FRAGMENTS), _GLUE), min_size=1, max_size=6))
def test_idempotent_on_glued_fragments(parts: list[tuple[str, str]]) -> None:
    text = "".join(fragment + glue for fragment, glue in parts)
    once = redact(text)
    assert redact(once.text).text == once.text
