"""Phone numbers, found with ``phonenumbers`` (the libphonenumber port) and our own windows.

``phonenumbers`` is the library Presidio's PhoneRecognizer wraps; it has offline metadata and
imports in ~0.1 s. It comes in as a dependency of ``presidio-analyzer``.

What is detected (and what deliberately is not)
-----------------------------------------------
PHONE: ``phonenumbers.PhoneNumberMatcher`` with leniency VALID (the number must be a valid,
assigned-range number for its country). International numbers (``+`` or ``00`` prefix) of
every country are found; national formats of the regions in ``PiiRedactor.phone_regions``
(default US, GB, FR), and those must also be grouped the way the region writes numbers
(STRICT_GROUPING), which rejects order numbers such as "2024-000123" and ISBNs.
Germany's national format is *not* a default region: its variable-length numbering makes
almost any ``0xxx xxxx`` code (batch numbers, references) "valid". A number followed or
preceded by other digits ("+44 20 7946 0958 2024") is found by trying windows of whole
tokens, which ``PhoneNumberMatcher`` alone does not do. Vanity numbers (1-800-FLOWERS) and
extensions are not redacted.

The worst case for speed is a long run of space-separated numbers (a 2 kB number table:
~30 ms), which ``phonenumbers`` scans token by token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import phonenumbers

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


class PhoneFinder:
    """Phone numbers of the national formats of ``regions`` (and international ones).

    No regions means international numbers only (region ``ZZ``). The regions are not
    checked here: see :func:`unsupported_regions`.
    """

    def __init__(self, regions: Sequence[str]) -> None:
        self.regions = tuple(regions) or ("ZZ",)  # ZZ: international only

    def _is_phone(self, raw: str, region: str) -> bool:
        """``raw`` as a whole is a valid number of ``region`` (or international)."""
        try:  # cheap rejection first: most token windows are not numbers at all
            if not phonenumbers.is_valid_number(phonenumbers.parse(raw, region)):
                return False
        except phonenumbers.NumberParseException:
            return False
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
            if not hits:
                for cand in self._windows(text, run.start(), run.end()):
                    found[(cand.start, cand.end)] = cand
        return list(found.values())

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
