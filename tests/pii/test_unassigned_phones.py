"""Phone numbers in reserved or unallocated ranges are personal data too (issue 11).

libphonenumber calls them invalid (no operator holds the range), so a redactor that trusts
validity leaves "07700 900123" or "+1 555 555 0143" in a user's text. Each test mixes numbers
that are redacted only since the well-formedness check with look-alikes of the same shape
that must stay.
"""

from __future__ import annotations

import pytest

from rag_core.pii import EntityType, PiiRedactor, redact


def _missed(texts: list[str]) -> list[str]:
    """The texts in which redaction left something other than one [PHONE]."""
    return [t for t in texts if redact(t).text != "[PHONE]"]


def _touched(texts: list[str]) -> list[str]:
    return [t for t in texts if redact(t).findings]


def test_us_fiction_numbers_under_any_area_code_are_redacted() -> None:
    # 555-0100..0199 is set aside for fiction under every area code, assigned or not.
    fiction = [f"({area}) 555-01{n:02d}" for area in (200, 222, 299, 555, 999, 202)
               for n in (0, 43, 99)]
    assert _missed(fiction) == []
    assert _missed(["222-555-0143", "222.555.0143", "2225550143", "1-222-555-0143"]) == []
    # The same digits grouped the US way or not at all are numbers; other groupings, or a
    # shape no US number has (a leading 0 or 1), are not.
    assert _touched(["order 2024-000123", "ref 0222-555-0143", "(055) 555-0143",
                     "2225-550-143", "on 2024-01-15"]) == []


def test_international_plus_1_555_numbers_are_redacted() -> None:
    assert _missed(["+1 555 555 0143", "+1-555-010-0199", "+1 (555) 555-0100",
                    "+15555550143", "+1 999 555 0100"]) == []
    assert _touched(["+1 555 0143 123"]) == []  # not grouped the way +1 numbers are


def test_uk_drama_numbers_are_redacted() -> None:
    drama = [f"07700 900{n:03d}" for n in (0, 123, 999)] + \
        [f"020 7946 {n:04d}" for n in (0, 123, 999)] + \
        [f"01632 960{n:03d}" for n in (0, 999)] + ["0115 496 0000", "0115 496 0999"]
    assert _missed(drama) == []
    assert _missed(["+44 7700 900123", "+44 (0)7700 900123", "+447700900999",
                    "0044 7700 900000"]) == []
    # Without its trunk prefix a UK national number is not one; a split group is not either.
    assert _touched(["7700 900123", "077 00900 123"]) == []


def test_french_fiction_numbers_are_redacted() -> None:
    fiction = [f"{prefix} {a:02d} {b:02d}" for prefix in ("01 99 00", "06 39 98")
               for a, b in ((0, 0), (12, 34), (99, 99))]
    assert _missed(fiction) == []
    assert _missed(["+33 6 39 98 12 34", "+33639981234", "0639981234"]) == []
    assert _touched(["6 39 98 12 34", "ISBN 0-639-98123-4"]) == []


def test_a_fiction_number_glued_to_letters_or_an_amount_stays() -> None:
    # Leniency POSSIBLE does not look at the neighbours: the redactor does.
    assert _touched(["IBAN NL92ABNA0639981234 (mistyped)", "code X07700900123",
                     "07700900123%", "€2225550143"]) == []
    text = "Call Alex on 07700 900461 or +1 555 555 0143, order 2024-000123."
    result = redact(text)
    assert result.text == "Call Alex on [PHONE] or [PHONE], order 2024-000123."
    assert [f.entity_type for f in result.findings] == [EntityType.PHONE] * 2


@pytest.mark.parametrize("text", ["07700 900123", "06 39 98 12 34"])
def test_national_fiction_numbers_follow_the_configured_regions(text: str) -> None:
    assert PiiRedactor(phone_regions=["US"]).redact(text).findings == []
    assert PiiRedactor(phone_regions=["GB", "FR"]).redact(text).text == "[PHONE]"
