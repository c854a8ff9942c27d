"""Redaction of personal data before text reaches the LLM, cache-key logs or the audit log.

``redact(text)`` replaces e-mail addresses, phone numbers, payment card numbers, IBANs, US
social security numbers and IPv4/IPv6 addresses by the placeholders ``[EMAIL]``, ``[PHONE]``,
``[CARD]``, ``[IBAN]``, ``[SSN]`` and ``[IP]``, and reports what it replaced as ``Finding``
spans of the *original* text (types and offsets only: a finding never carries the value, so
findings are safe to log).

Why not Presidio
----------------
``presidio_analyzer`` 2.2.366 is installed and its pattern recognizers *do* run offline
without a spaCy model: instantiate them directly and call
``recognizer.analyze(text, recognizer.supported_entities, None)``. They are still not used
here, for three measured reasons:

1. importing anything from ``presidio_analyzer`` (even ``presidio_analyzer.pattern``) runs the
   package ``__init__``, which imports spaCy, transformers and torch: 8-12 s and several
   hundred MB per process, for a per-query code path;
2. ``EmailRecognizer.validate_result`` calls ``tldextract.extract``, which on first use tries
   to download the public-suffix list from publicsuffix.org and GitHub; offline it logs two
   network tracebacks (and can wait for DNS/connect timeouts) before falling back to its
   bundled snapshot;
3. precision on our labelled set (``rag_core/data/pii_cases.jsonl``, 331 cases): overall
   precision 0.87 / recall 0.96, against 1.00 / 1.00 here (but this package was tuned on
   the set: its first run scored 0.97 / 0.99 on the first 268 cases, and a batch of 63
   cases written afterwards scored 1.00 / 0.975 before lower-case IBANs were added).
   Presidio's SSN recognizer accepts 9xx areas and any 9-digit number, its IP recognizer
   takes version and section numbers and ``::``, its phone recognizer (leniency VALID)
   takes order numbers and ISBNs, its card pattern misses Mastercard 2-series and 19-digit
   numbers. Reproduce with
   ``python -m evaluations.pii_report --compare-presidio``.

Our detectors reuse the same validation ideas (checksums, ``ipaddress``;
:mod:`rag_core.pii.detectors`, which lists what is detected and what deliberately is not)
and, for phone numbers, ``phonenumbers`` (the libphonenumber port that Presidio's
PhoneRecognizer wraps; :mod:`rag_core.pii.phones`).

Overlaps are resolved longest span first, then by detector confidence. Phone numbers are
searched after the other entities, on a copy of the text where those are masked, so a
checksummed entity always beats a phone reading of its digits. ``redact`` is idempotent by
construction: ``find`` repeats detection on its own redacted output until nothing new shows
up and maps anything found there back to the original text (see ``PiiRedactor.find``).

Speed (one core): a 1 kB question without digits takes ~0.1 ms, one with an address and a
phone number ~2 ms, a 12 kB text dense with PII ~90 ms. The worst case is a long run of
space-separated numbers (a 2 kB number table: ~30 ms), which ``phonenumbers`` scans token by
token. The default ``PiiRedactor`` is built once per process (``default_redactor``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from rag_core.errors import ConfigurationError
from rag_core.pii.detectors import DETECTORS
from rag_core.pii.phones import PhoneFinder, unsupported_regions
from rag_core.pii.types import PLACEHOLDERS, Candidate, EntityType, Finding, RedactionResult

__all__ = [
    "PiiRedactor",
    "default_redactor",
    "find_pii",
    "redact",
]

_MAX_PASSES = 4  # re-detection rounds on the redacted text


def _resolve(candidates: list[Candidate]) -> list[Candidate]:
    """Longest first, then most confident, then leftmost; drop what overlaps a kept span."""
    candidates.sort(key=lambda c: (-(c.end - c.start), -c.score, c.start))
    kept: list[Candidate] = []
    for cand in candidates:
        if all(cand.end <= k.start or cand.start >= k.end for k in kept):
            kept.append(cand)
    kept.sort(key=lambda c: c.start)
    return kept


def _mask(text: str, spans: Iterable[Candidate]) -> str:
    """``text`` with each span replaced by ``[XX..X]`` of the same length (offsets kept).

    Used before the phone search: digits already claimed by a validated entity cannot be
    read as (part of) a phone number, and a phone number glued to such an entity is seen on
    its own. Offsets are unchanged, so phone spans need no mapping back.
    """
    chars = list(text)
    for span in spans:
        length = span.end - span.start  # always >= 3 ("::1" is the shortest finding)
        chars[span.start:span.end] = ["["] + ["X"] * (length - 2) + ["]"]
    return "".join(chars)


class PiiRedactor:
    """A configured redactor. Build once and reuse (``default_redactor`` does).

    Detection runs in two phases: first the structured, validated entities (e-mail, card,
    IBAN, SSN, IP); then phone numbers on a copy of the text in which the first phase's spans
    are masked, so that a phone number next to, say, an SSN is still seen on its own.
    """

    def __init__(self, entities: Iterable[EntityType | str] = tuple(EntityType),
                 phone_regions: Sequence[str] = ("US", "GB", "FR")) -> None:
        entities = tuple(entities)
        unknown_entities = [e for e in entities if e not in set(EntityType)]
        if unknown_entities:
            raise ConfigurationError("pii.entities", unknown_entities,
                                     f"known entity types are {[e.value for e in EntityType]}")
        self.entities = frozenset(EntityType(e) for e in entities)
        unknown = unsupported_regions(phone_regions)
        if unknown:
            raise ConfigurationError("pii.phone_regions", unknown,
                                     "not ISO 3166 regions known to phonenumbers")
        self._phones = PhoneFinder(phone_regions)
        self.phone_regions = self._phones.regions
        self._detectors = [DETECTORS[e] for e in EntityType
                           if e in self.entities and e in DETECTORS]

    # -- public --
    def _detect(self, text: str) -> list[Candidate]:
        kept = _resolve([c for detector in self._detectors for c in detector(text)])
        if EntityType.PHONE in self.entities and sum(c.isdigit() for c in text) >= 7:
            masked = _mask(text, kept) if kept else text
            kept = _resolve(kept + self._phones.find(masked))
        return kept

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, ordered by position.

        Detection is repeated on the redacted text until it finds nothing new; what it does
        find there is mapped back to the original text (merged with any finding it touches).
        A value glued to another ("2001:db8::1jane@example.com") is only visible once its
        neighbour is a placeholder, and this loop is exactly "redact the output again", so
        ``redact(redact(x).text).text == redact(x).text`` holds by construction whenever the
        loop settles within ``_MAX_PASSES`` rounds (one round in every case we have seen).
        """
        kept = self._detect(text)
        for _ in range(_MAX_PASSES):
            if not kept:
                break
            redacted, segments = _apply(text, kept)
            extra = self._detect(redacted)
            if not extra:
                break
            for cand in extra:
                start, end = _to_original(cand.start, cand.end, segments)
                touched = [k for k in kept if k.start < end and start < k.end]
                start = min([start, *(k.start for k in touched)])
                end = max([end, *(k.end for k in touched)])
                kept = [k for k in kept if k not in touched]
                kept.append(Candidate(start, end, cand.entity_type, cand.score))
            kept.sort(key=lambda c: c.start)
        return [Finding(c.entity_type, c.start, c.end) for c in kept]

    def redact(self, text: str) -> RedactionResult:
        """Replace every finding by its placeholder."""
        findings = self.find(text)
        if not findings:
            return RedactionResult(text, [])
        spans = [Candidate(f.start, f.end, f.entity_type, 1.0) for f in findings]
        return RedactionResult(_apply(text, spans)[0], findings)


# redacted start, end; original start, end; True for a placeholder
_Segment = tuple[int, int, int, int, bool]


def _apply(text: str, spans: Sequence[Candidate]) -> tuple[str, list[_Segment]]:
    """Replace sorted, disjoint ``spans`` by placeholders; also return the segment map."""
    parts: list[str] = []
    segments: list[_Segment] = []
    position = length = 0
    for span in spans:
        for piece, o_start, o_end, is_placeholder in (
            (text[position:span.start], position, span.start, False),
            (PLACEHOLDERS[span.entity_type], span.start, span.end, True),
        ):
            parts.append(piece)
            segments.append((length, length + len(piece), o_start, o_end, is_placeholder))
            length += len(piece)
        position = span.end
    parts.append(text[position:])
    segments.append((length, length + len(text) - position, position, len(text), False))
    return "".join(parts), segments


def _to_original(start: int, end: int, segments: list[_Segment]) -> tuple[int, int]:
    """Map a span of the redacted text to the original (placeholders map to their source)."""
    o_start, o_end = start, end
    for r_start, r_end, s_start, s_end, is_placeholder in segments:
        if r_start <= start < r_end:
            o_start = s_start if is_placeholder else s_start + (start - r_start)
        if r_start < end <= r_end:
            o_end = s_end if is_placeholder else s_start + (end - r_start)
    return o_start, o_end


@lru_cache(maxsize=1)
def default_redactor() -> PiiRedactor:
    """The process-wide redactor with every entity type and the default phone regions."""
    return PiiRedactor()


def redact(text: str) -> RedactionResult:
    """Redact ``text`` with the default redactor (see the module docstring)."""
    return default_redactor().redact(text)


def find_pii(text: str) -> list[Finding]:
    """The findings ``redact`` would replace, without building the redacted text."""
    return default_redactor().find(text)
