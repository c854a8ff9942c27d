"""Phone numbers, found with ``phonenumbers`` (the libphonenumber port) and our own windows.

``phonenumbers`` is the library Presidio's PhoneRecognizer wraps; it has offline metadata and
imports in ~0.1 s. It comes in as a dependency of ``presidio-analyzer``.

What is detected (and what deliberately is not)
-----------------------------------------------
PHONE: ``phonenumbers.PhoneNumberMatcher`` with leniency VALID (a number in an assigned range
of its country), then, for what that leaves, leniency POSSIBLE with our own well-formedness
check (:func:`_well_formed`). International numbers (``+`` or ``00`` prefix) of every country
are found; national formats of the regions in ``PiiRedactor.phone_regions`` (default US, GB,
FR), and those must also be grouped the way the region writes numbers (STRICT_GROUPING),
which rejects order numbers such as "2024-000123" and ISBNs.

Why possible numbers too: a redactor errs toward privacy. A number in a reserved or
unallocated range (the US 555-0100..0199 fiction numbers under an unassigned area code,
"+1 555 555 0143", the UK drama ranges 07700 900xxx, 01632 960xxx, 0115 496 xxxx, French
06 39 98 xx xx) is not "valid" to libphonenumber, yet it is written exactly like a real one
and may be a real person's tomorrow. It is redacted when its length is possible for its
country (not only as a local number: seven US digits need an area code to be told apart from
references), its digits fit the country's general number shape, the national prefix is there
when the country writes one ("0" in GB and FR), and its digit groups keep together the groups
the country's own format makes (so "2024-000123" still fails).
Germany's national format is *not* a default region: its variable-length numbering makes
almost any ``0xxx xxxx`` code (batch numbers, references) "valid". A number followed or
preceded by other digits ("+44 20 7946 0958 2024") is found by trying windows of whole
tokens, which ``PhoneNumberMatcher`` alone does not do. Vanity numbers (1-800-FLOWERS) and
extensions are not redacted.

The worst case for speed is a long run of space-separated numbers (a 2 kB number table:
~30 ms), which ``phonenumbers`` scans token by token.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberFormat, ValidationResult

from rag_core.pii.types import SCORES, Candidate, EntityType

__all__ = ["PhoneFinder", "unsupported_regions"]

# A run of phone-ish characters on one line (digits, spaces, . - ( ) and a leading +).
_PHONE_RUN_RE = re.compile(r"[+(]?\d[\d \t.()\-]*\d\)?")
_MAX_PHONE_TOKENS = 7  # "+33 1 42 68 53 00" has 6 space-separated groups
_MAX_RUN_TOKENS = 40  # longer runs are number tables: only the matcher's own scan applies


def unsupported_regions(regions: Iterable[str]) -> list[str]:
    """The entries of ``regions`` that are not ISO 3166 regions known to ``phonenumbers``."""
    return [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]


def _is_international(raw: str) -> bool:
    return raw.lstrip("(").startswith(("+", "00"))


def _grouped_as_phone(raw: str, region: str) -> bool:
    """National-format numbers must also be grouped the way the region writes numbers.

    Leniency VALID only checks the digits, so "2024-000123" (an order number) is the valid
    US number 202-400-0123 and "0-306-40615-2" (an ISBN) a valid French one. STRICT_GROUPING
    rejects both; "+"/"00" numbers skip this check (the prefix is evidence enough, and people
    group foreign numbers freely, e.g. "+33 142 685 300").
    """
    strict = phonenumbers.Leniency.STRICT_GROUPING
    return any(m.start == 0 and m.end == len(raw)
               for m in phonenumbers.PhoneNumberMatcher(raw, region, leniency=strict))


def _glued(text: str, start: int, end: int) -> bool:
    """``text[start:end]`` touches a letter, ``%`` or a currency sign ("ABNA0417164300",
    "12345678%"): part of a code or an amount, not a number on its own.

    Leniency VALID makes this check itself; leniency POSSIBLE does not, so it is ours.
    """
    def sticky(char: str) -> bool:
        return char.isalpha() or char == "%" or unicodedata.category(char) == "Sc"

    before = start > 0 and text[start] not in "+(" and sticky(text[start - 1])
    return before or (end < len(text) and sticky(text[end]))


def _well_formed(raw: str, region: str) -> bool:
    """``raw`` as a whole is a number written the way ``region`` (or, with ``+``/``00``, its
    own country) writes numbers, assigned or not.

    The checks, each one a look-alike it keeps out: a possible length for a whole number
    (dates, seven-digit references), the country's general shape (a US number never starts
    with 0 or 1), the national prefix in national format when the country writes one
    ("7700 900123" is not a UK number, "07700 900123" is), and digit groups that never split
    a group of the country's own format ("2024-000123" splits 202-400-0123).
    """
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return False
    if number.extension or number.country_code is None or \
            phonenumbers.is_possible_number_with_reason(number) != ValidationResult.IS_POSSIBLE:
        return False
    home = phonenumbers.region_code_for_country_code(number.country_code)
    metadata = PhoneMetadata.metadata_for_region(home, None)
    desc = metadata.general_desc if metadata is not None else None
    nsn = phonenumbers.national_significant_number(number)
    if metadata is None or desc is None or desc.national_number_pattern is None \
            or re.fullmatch(desc.national_number_pattern, nsn) is None:
        return False
    groups = re.findall(r"\d+", phonenumbers.normalize_digits_only(raw, keep_non_digits=True))
    digits = "".join(groups)
    if not digits.endswith(nsn):
        return False
    lead = len(digits) - len(nsn)
    if not _is_international(raw):
        national = phonenumbers.normalize_digits_only(
            phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL))
        written = national[:-len(nsn)] if national.endswith(nsn) else None
        if digits[:lead] not in {written, metadata.national_prefix or ""}:
            return False
    # The groups of the country's format, as in "tel:+44-7700-900123"; one block means the
    # country has no format for numbers of this shape.
    expected = phonenumbers.format_number(number, PhoneNumberFormat.RFC3966) \
        .split(";")[0].split("-")[1:]
    if len(expected) < 2:
        return False
    allowed = set(itertools.accumulate(len(g) for g in expected))
    breaks = {end - lead for end in itertools.accumulate(len(g) for g in groups)}
    return {b for b in breaks if 0 < b < len(nsn)} <= allowed


class PhoneFinder:
    """Phone numbers of the national formats of ``regions`` (and international ones).

    No regions means international numbers only (region ``ZZ``). The regions are not
    checked here: see :func:`unsupported_regions`.
    """

    def __init__(self, regions: Sequence[str]) -> None:
        self.regions = tuple(regions) or ("ZZ",)  # ZZ: international only

    def _is_phone(self, raw: str, region: str) -> bool:
        """``raw`` as a whole is a number of ``region`` (or international): valid, or
        possible and well-formed."""
        try:  # cheap rejection first: most token windows are not numbers at all
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            return False
        if not phonenumbers.is_possible_number(number):
            return False
        if not phonenumbers.is_valid_number(number):
            return _well_formed(raw, region)
        for match in phonenumbers.PhoneNumberMatcher(raw, region,
                                                     leniency=phonenumbers.Leniency.VALID):
            if match.start == 0 and match.end == len(raw):
                return _is_international(raw) or _grouped_as_phone(raw, region)
        return False

    def find(self, text: str) -> list[Candidate]:
        """Phone numbers, looked for only in runs of phone-ish characters with >= 7 digits.

        Each run is handed to ``PhoneNumberMatcher`` with one character of context on both
        sides (all the context its checks read). The matcher takes a whole run as one
        candidate and, when that is not a number, only retries single tokens, so
        "+44 20 7946 0958 2024" or "212 555 0147 7pm" yield nothing; runs it leaves empty
        are retried with windows of whole tokens.
        """
        score = SCORES[EntityType.PHONE]
        found: dict[tuple[int, int], Candidate] = {}
        for run in _PHONE_RUN_RE.finditer(text):
            if sum(c.isdigit() for c in run.group()) < 7:
                continue
            lo, hi = max(run.start() - 1, 0), min(run.end() + 1, len(text))
            segment = text[lo:hi]
            hits = 0
            for region in self.regions:
                for match in phonenumbers.PhoneNumberMatcher(
                        segment, region, leniency=phonenumbers.Leniency.VALID):
                    span = (lo + match.start, lo + match.end)
                    if span not in found and (_is_international(match.raw_string)
                                              or _grouped_as_phone(match.raw_string, region)):
                        found[span] = Candidate(*span, EntityType.PHONE, score)
                        hits += 1
            if not hits:  # no assigned number here: a reserved or unallocated one?
                hits = self._possible(segment, lo, found)
            if not hits:
                for cand in self._windows(text, run.start(), run.end()):
                    found[(cand.start, cand.end)] = cand
        return list(found.values())

    def _possible(self, segment: str, offset: int,
                  found: dict[tuple[int, int], Candidate]) -> int:
        """Add the well-formed numbers of ``segment`` that are possible but not valid (see
        :func:`_well_formed`) to ``found``; how many were added."""
        hits = 0
        for region in self.regions:
            for match in phonenumbers.PhoneNumberMatcher(
                    segment, region, leniency=phonenumbers.Leniency.POSSIBLE):
                span = (offset + match.start, offset + match.end)
                if span not in found and not _glued(segment, match.start, match.end) \
                        and _well_formed(match.raw_string, region):
                    found[span] = Candidate(*span, EntityType.PHONE, SCORES[EntityType.PHONE])
                    hits += 1
        return hits

    def _windows(self, text: str, start: int, end: int) -> Iterable[Candidate]:
        tokens = [(m.start() + start, m.end() + start)
                  for m in re.finditer(r"\S+", text[start:end])]
        if len(tokens) < 2 or len(tokens) > _MAX_RUN_TOKENS:
            return
        i = 0
        while i < len(tokens):
            hit = None
            for j in range(min(len(tokens), i + _MAX_PHONE_TOKENS), i, -1):
                raw = text[tokens[i][0]:tokens[j - 1][1]]
                digits = sum(c.isdigit() for c in raw)
                if 7 <= digits <= 17 and any(self._is_phone(raw, region)
                                             for region in self.regions):
                    hit = j
                    break
            if hit is None:
                i += 1
                continue
            yield Candidate(tokens[i][0], tokens[hit - 1][1], EntityType.PHONE,
                            SCORES[EntityType.PHONE])
            i = hit
