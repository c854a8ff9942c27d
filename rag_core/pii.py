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
   precision 0.87 / recall 0.96, against 1.00 / 1.00 here (but this module was tuned on
   the set: its first run scored 0.97 / 0.99 on the first 268 cases, and a batch of 63
   cases written afterwards scored 1.00 / 0.975 before lower-case IBANs were added).
   Presidio's SSN recognizer accepts 9xx areas and any 9-digit number, its IP recognizer
   takes version and section numbers and ``::``, its phone recognizer (leniency VALID)
   takes order numbers and ISBNs, its card pattern misses Mastercard 2-series and 19-digit
   numbers. Reproduce with
   ``python -m evaluations.pii_report --compare-presidio``.

The detectors below reuse the same validation ideas (checksums, ``ipaddress``) and, for phone
numbers, ``phonenumbers`` (the libphonenumber port that Presidio's PhoneRecognizer wraps;
offline metadata, ~0.1 s import). ``phonenumbers`` comes in as a dependency of
``presidio-analyzer``.

What is detected (and what deliberately is not)
-----------------------------------------------
* EMAIL: a local part of letters, digits, ``._%+-`` and inner apostrophes, ``@``, a dotted
  host name whose last label is alphabetic (or punycode ``xn--``); a last label that is a
  file extension (``icon@2x.png``) is not an address. Obfuscations ("jane at example dot
  com") and quoted local parts are not detected.
* PHONE: ``phonenumbers.PhoneNumberMatcher`` with leniency VALID (the number must be a valid,
  assigned-range number for its country). International numbers (``+`` or ``00`` prefix) of
  every country are found; national formats of the regions in ``PiiRedactor.phone_regions``
  (default US, GB, FR), and those must also be grouped the way the region writes numbers
  (STRICT_GROUPING), which rejects order numbers such as "2024-000123" and ISBNs.
  Germany's national format is *not* a default region: its variable-length numbering makes
  almost any ``0xxx xxxx`` code (batch numbers, references) "valid". A number followed or
  preceded by other digits ("+44 20 7946 0958 2024") is found by trying windows of whole
  tokens, which ``PhoneNumberMatcher`` alone does not do. Vanity numbers (1-800-FLOWERS) and
  extensions are not redacted.
* CARD: 13-19 digits, contiguous or grouped 4-4-4-4(-1..3) / 4-6-4(5) with one consistent
  space or dash separator, a Luhn-valid checksum, and an issuer prefix whose length fits
  the network (Visa, Mastercard incl. 2-series, Amex, Discover, JCB, Diners, UnionPay,
  Maestro). Luhn alone would flag 10 % of random 16-digit numbers.
* IBAN: country code + 2 check digits + BBAN, compact or in groups of four separated by
  single spaces, any letter case; length must match the country (IBAN registry) and the
  ISO 7064 mod-97 checksum must be 1. Trailing groups that break validation are dropped
  (so a following word such as "EUR" is not swallowed).
* SSN: ``AAA-GG-SSSS`` or ``AAA GG SSSS`` (one consistent separator) with the SSA rules:
  area not 000, 666 or 900-999, group not 00, serial not 0000. Nine unseparated digits are
  only an SSN right after "SSN"/"social security (number)".
* IP: IPv4 dotted quads (no leading zeros, each octet <= 255, not part of a longer dotted
  number) and IPv6 (validated by ``ipaddress``, including ``::ffff:1.2.3.4`` forms and
  ``%zone`` ids). A CIDR ``/nn`` suffix is left in place. Decision on version strings: a
  dotted quad directly after a version-like word (``version``, ``v``, ``release``,
  ``build``, ``firmware``, ``section``, ``chapter``, ...) is *not* an address; any other
  bare dotted quad is (failing safe: "1.2.3.4" alone is redacted). IPv6 candidates must
  contain a digit and be more than ``::``, so ``std::vector``, ``a :: b``, times and MAC
  addresses are not addresses.

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

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

import phonenumbers

from rag_core.errors import ConfigurationError

__all__ = [
    "PLACEHOLDERS",
    "EntityType",
    "Finding",
    "PiiRedactor",
    "RedactionResult",
    "default_redactor",
    "find_pii",
    "iban_is_valid",
    "luhn_is_valid",
    "redact",
    "ssn_is_valid",
]


class EntityType(StrEnum):
    """The kinds of personal data ``redact`` replaces; the value names the placeholder."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    SSN = "SSN"
    IP = "IP"


PLACEHOLDERS: dict[EntityType, str] = {kind: f"[{kind.value}]" for kind in EntityType}


@dataclass(frozen=True)
class Finding:
    """One redacted span ``[start, end)`` of the original text (no value: safe to log)."""

    entity_type: EntityType
    start: int
    end: int


@dataclass(frozen=True)
class RedactionResult:
    """The redacted text and the spans of the original text that were replaced."""

    text: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many findings of each type (e.g. for metrics or the audit log)."""
        out: dict[str, int] = {}
        for finding in self.findings:
            out[finding.entity_type.value] = out.get(finding.entity_type.value, 0) + 1
        return out


@dataclass(frozen=True)
class _Candidate:
    start: int
    end: int
    entity_type: EntityType
    score: float


# --- checksums -----------------------------------------------------------------------------
def luhn_is_valid(digits: str) -> bool:
    """Luhn (mod 10) checksum of a string of ASCII digits."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# IBAN lengths per country (SWIFT IBAN registry).
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


def iban_is_valid(iban: str) -> bool:
    """Country length and ISO 7064 mod-97 check of an IBAN (spaces and case ignored)."""
    compact = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+", compact):
        return False
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def ssn_is_valid(ssn: str) -> bool:
    """SSA rules for a 9-digit SSN: area not 000/666/900-999, group not 00, serial not 0000."""
    digits = re.sub(r"[ -]", "", ssn)
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    area, group, serial = int(digits[:3]), digits[3:5], digits[5:]
    return area not in (0, 666) and area < 900 and group != "00" and serial != "0000"


def _card_network_accepts(digits: str) -> bool:
    """True when the issuer prefix exists and allows this length."""
    n = len(digits)
    p1, p2, p3, p4, p6 = (int(digits[:k]) for k in (1, 2, 3, 4, 6))
    if p1 == 4:
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19  # Diners Club
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    if p2 in (50, 56, 57, 58, 63, 67) or p4 in (6759, 6761, 6762, 6763):
        return 12 <= n <= 19  # Maestro
    return False


# --- patterns ------------------------------------------------------------------------------
# Local part: the characters real addresses use (letters, digits, ``._%+-`` and an inner
# apostrophe as in o'brien), starting with a letter/digit/underscore. RFC 5322 also allows
# ``!#$&*/=?^`{|}~``, but then "user=ops@example.org" or "'judy@example.org'" would swallow
# the key or the quote; no provider issues such addresses.
_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9_%+.\-])"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_%+\-]|'(?=[A-Za-z0-9_])|\.(?=[A-Za-z0-9_%+\-]))*"
    r"@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
    r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9])"
)
_FILE_EXTENSIONS = frozenset((
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic", "pdf",
    "js", "mjs", "css", "scss", "jsx", "tsx", "json", "yaml", "yml", "xml", "txt", "csv",
    "log", "lock", "gz", "tgz", "whl",
))

# Card: grouped 4-4-4-4(-1..3) or 4-6-4/5 with one consistent separator, or 13-19 digits.
_CARD_RE = re.compile(
    r"(?<![\w.,+\-])"
    r"(?:\d{4}(?P<s1>[ -])\d{4}(?P=s1)\d{4}(?P=s1)\d{4}(?:(?P=s1)\d{1,3})?(?!(?P=s1)\d)"
    r"|\d{4}(?P<s2>[ -])\d{6}(?P=s2)\d{4,5}(?!(?P=s2)\d)"
    r"|\d{13,19})"
    r"(?![\w]|[.,\-]\d)"
)
# A card candidate right after "1234 " or "ES48 " is a slice of a longer grouped number
# (an IBAN with a bad checksum, a 20+ digit reference), not a card.
_CARD_EMBEDDED_RE = re.compile(r"(?:\d|\b[A-Z]{2}\d{2})[ -]\Z")

_IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    re.IGNORECASE,
)

_SSN_RE = re.compile(r"(?<![\w\-.])\d{3}(?P<sep>[- ])\d{2}(?P=sep)\d{4}(?![\w]|[\-.]\d)")
_SSN_CONTEXT_RE = re.compile(
    r"(?i)\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\s*(?:[:#=]|is)?\s*"
    r"(?P<ssn>\d{9})(?![\w]|[\-.]\d)"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[0-9A-Za-z_.]+)?"
    r"(?![\w:]|\.\d)"
)
# A dotted quad right after one of these words is a version/section number, not an address.
_VERSION_CONTEXT_RE = re.compile(
    r"(?i)(?:\b(?:v|ver|version|versions|release|rel|build|rev|revision|firmware|fw|"
    r"patch|update|kb|section|sec|chapter|clause|paragraph|para|art|article|rule|step|"
    r"item|table|figure|fig|appendix|oid)\.?|§)\s*[:#]?\s*$"
)

_SCORES: dict[EntityType, float] = {
    EntityType.CARD: 1.0, EntityType.IBAN: 1.0, EntityType.EMAIL: 0.95,
    EntityType.IP: 0.9, EntityType.SSN: 0.85, EntityType.PHONE: 0.75,
}


def _email(text: str) -> Iterable[_Candidate]:
    if "@" not in text:
        return
    for match in _EMAIL_RE.finditer(text):
        last_label = match.group().rsplit(".", 1)[1].lower()
        if last_label not in _FILE_EXTENSIONS:
            yield _Candidate(match.start(), match.end(), EntityType.EMAIL,
                             _SCORES[EntityType.EMAIL])


def _card(text: str) -> Iterable[_Candidate]:
    for match in _CARD_RE.finditer(text):
        if _CARD_EMBEDDED_RE.search(text, max(0, match.start() - 6), match.start()):
            continue
        digits = re.sub(r"[ -]", "", match.group())
        if luhn_is_valid(digits) and _card_network_accepts(digits):
            yield _Candidate(match.start(), match.end(), EntityType.CARD,
                             _SCORES[EntityType.CARD])


def _iban(text: str) -> Iterable[_Candidate]:
    for match in _IBAN_RE.finditer(text):
        start, raw = match.start(), match.group()
        # longest first: the whole match, then without each trailing space-separated group
        ends = [len(raw)] + [i for i in range(len(raw) - 1, 3, -1) if raw[i] == " "]
        for end in ends:
            if iban_is_valid(raw[:end]):
                yield _Candidate(start, start + end, EntityType.IBAN,
                                 _SCORES[EntityType.IBAN])
                break


def _ssn(text: str) -> Iterable[_Candidate]:
    score = _SCORES[EntityType.SSN]
    for match in _SSN_RE.finditer(text):
        if ssn_is_valid(match.group()):
            yield _Candidate(match.start(), match.end(), EntityType.SSN, score)
    for match in _SSN_CONTEXT_RE.finditer(text):
        if ssn_is_valid(match.group("ssn")):
            yield _Candidate(match.start("ssn"), match.end("ssn"), EntityType.SSN, score)


def _ip(text: str) -> Iterable[_Candidate]:
    score = _SCORES[EntityType.IP]
    if "." in text:
        for match in _IPV4_RE.finditer(text):
            before = text[max(0, match.start() - 24):match.start()]
            if _VERSION_CONTEXT_RE.search(before) is None:
                yield _Candidate(match.start(), match.end(), EntityType.IP, score)
    if "::" in text or text.count(":") >= 7:
        for match in _IPV6_RE.finditer(text):
            candidate = match.group()
            while candidate.endswith(":") and not candidate.endswith("::"):
                candidate = candidate[:-1]  # "... 2001:db8::1: next" -> drop the colon
            if candidate == "::" or not any(c.isdigit() for c in candidate.split("%")[0]):
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            yield _Candidate(match.start(), match.start() + len(candidate), EntityType.IP,
                             score)


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


_Detector = Callable[[str], Iterable[_Candidate]]


# A run of phone-ish characters on one line (digits, spaces, . - ( ) and a leading +).
_PHONE_RUN_RE = re.compile(r"[+(]?\d[\d \t.()\-]*\d\)?")
_MAX_PHONE_TOKENS = 7  # "+33 1 42 68 53 00" has 6 space-separated groups
_MAX_RUN_TOKENS = 40  # longer runs are number tables: only the matcher's own scan applies
_MAX_PASSES = 4  # re-detection rounds on the redacted text


def _resolve(candidates: list[_Candidate]) -> list[_Candidate]:
    """Longest first, then most confident, then leftmost; drop what overlaps a kept span."""
    candidates.sort(key=lambda c: (-(c.end - c.start), -c.score, c.start))
    kept: list[_Candidate] = []
    for cand in candidates:
        if all(cand.end <= k.start or cand.start >= k.end for k in kept):
            kept.append(cand)
    kept.sort(key=lambda c: c.start)
    return kept


def _mask(text: str, spans: Iterable[_Candidate]) -> str:
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
        unknown = [r for r in phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ConfigurationError("pii.phone_regions", unknown,
                                     "not ISO 3166 regions known to phonenumbers")
        self.phone_regions = tuple(phone_regions) or ("ZZ",)  # ZZ: international only
        detectors: dict[EntityType, _Detector] = {
            EntityType.EMAIL: _email, EntityType.CARD: _card, EntityType.IBAN: _iban,
            EntityType.SSN: _ssn, EntityType.IP: _ip,
        }
        self._detectors = [detectors[e] for e in EntityType
                           if e in self.entities and e in detectors]

    # -- phones --
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

    def _phones(self, text: str) -> list[_Candidate]:
        """Phone numbers, looked for only in runs of phone-ish characters with >= 7 digits.

        Each run is handed to ``PhoneNumberMatcher`` with one character of context on both
        sides (all the context its checks read). The matcher takes a whole run as one
        candidate and, when that is not a number, only retries single tokens, so
        "+44 20 7946 0958 2024" or "212 555 0147 7pm" yield nothing; runs it leaves empty
        are retried with windows of whole tokens.
        """
        score = _SCORES[EntityType.PHONE]
        found: dict[tuple[int, int], _Candidate] = {}
        for run in _PHONE_RUN_RE.finditer(text):
            if sum(c.isdigit() for c in run.group()) < 7:
                continue
            lo, hi = max(run.start() - 1, 0), min(run.end() + 1, len(text))
            segment = text[lo:hi]
            hits = 0
            for region in self.phone_regions:
                for match in phonenumbers.PhoneNumberMatcher(
                        segment, region, leniency=phonenumbers.Leniency.VALID):
                    span = (lo + match.start, lo + match.end)
                    if span not in found and (_is_international(match.raw_string)
                                              or _grouped_as_phone(match.raw_string, region)):
                        found[span] = _Candidate(*span, EntityType.PHONE, score)
                        hits += 1
            if not hits:
                for cand in self._phone_windows(text, run.start(), run.end()):
                    found[(cand.start, cand.end)] = cand
        return list(found.values())

    def _phone_windows(self, text: str, start: int, end: int) -> Iterable[_Candidate]:
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
                                             for region in self.phone_regions):
                    hit = j
                    break
            if hit is None:
                i += 1
                continue
            yield _Candidate(tokens[i][0], tokens[hit - 1][1], EntityType.PHONE,
                             _SCORES[EntityType.PHONE])
            i = hit

    # -- public --
    def _detect(self, text: str) -> list[_Candidate]:
        kept = _resolve([c for detector in self._detectors for c in detector(text)])
        if EntityType.PHONE in self.entities and sum(c.isdigit() for c in text) >= 7:
            masked = _mask(text, kept) if kept else text
            kept = _resolve(kept + self._phones(masked))
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
                kept.append(_Candidate(start, end, cand.entity_type, cand.score))
            kept.sort(key=lambda c: c.start)
        return [Finding(c.entity_type, c.start, c.end) for c in kept]

    def redact(self, text: str) -> RedactionResult:
        """Replace every finding by its placeholder."""
        findings = self.find(text)
        if not findings:
            return RedactionResult(text, [])
        spans = [_Candidate(f.start, f.end, f.entity_type, 1.0) for f in findings]
        return RedactionResult(_apply(text, spans)[0], findings)


# redacted start, end; original start, end; True for a placeholder
_Segment = tuple[int, int, int, int, bool]


def _apply(text: str, spans: Sequence[_Candidate]) -> tuple[str, list[_Segment]]:
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
