"""The validated detectors: e-mail, payment card, IBAN, US SSN and IP addresses.

Each detector is a regular expression for the candidates followed by the checks that make a
candidate an entity (checksums, issuer prefixes, ``ipaddress``), so that look-alikes such as
order numbers, version strings and file names stay in the text. Phone numbers, which need
``phonenumbers`` and a second pass over masked text, are in :mod:`rag_core.pii.phones`.

What is detected (and what deliberately is not)
-----------------------------------------------
* EMAIL: a local part of letters, digits, ``._%+-`` and inner apostrophes, ``@``, a dotted
  host name whose last label is alphabetic (or punycode ``xn--``); a last label that is a
  file extension (``icon@2x.png``) is not an address. Obfuscations ("jane at example dot
  com") and quoted local parts are not detected.
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
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from rag_core.pii.types import SCORES, Candidate, Detector, EntityType

__all__ = [
    "DETECTORS",
    "iban_is_valid",
    "luhn_is_valid",
    "ssn_is_valid",
]


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

def _email(text: str) -> Iterable[Candidate]:
    if "@" not in text:
        return
    for match in _EMAIL_RE.finditer(text):
        last_label = match.group().rsplit(".", 1)[1].lower()
        if last_label not in _FILE_EXTENSIONS:
            yield Candidate(match.start(), match.end(), EntityType.EMAIL,
                             SCORES[EntityType.EMAIL])


def _card(text: str) -> Iterable[Candidate]:
    for match in _CARD_RE.finditer(text):
        if _CARD_EMBEDDED_RE.search(text, max(0, match.start() - 6), match.start()):
            continue
        digits = re.sub(r"[ -]", "", match.group())
        if luhn_is_valid(digits) and _card_network_accepts(digits):
            yield Candidate(match.start(), match.end(), EntityType.CARD,
                             SCORES[EntityType.CARD])


def _iban(text: str) -> Iterable[Candidate]:
    for match in _IBAN_RE.finditer(text):
        start, raw = match.start(), match.group()
        # longest first: the whole match, then without each trailing space-separated group
        ends = [len(raw)] + [i for i in range(len(raw) - 1, 3, -1) if raw[i] == " "]
        for end in ends:
            if iban_is_valid(raw[:end]):
                yield Candidate(start, start + end, EntityType.IBAN,
                                 SCORES[EntityType.IBAN])
                break


def _ssn(text: str) -> Iterable[Candidate]:
    score = SCORES[EntityType.SSN]
    for match in _SSN_RE.finditer(text):
        if ssn_is_valid(match.group()):
            yield Candidate(match.start(), match.end(), EntityType.SSN, score)
    for match in _SSN_CONTEXT_RE.finditer(text):
        if ssn_is_valid(match.group("ssn")):
            yield Candidate(match.start("ssn"), match.end("ssn"), EntityType.SSN, score)


def _ip(text: str) -> Iterable[Candidate]:
    score = SCORES[EntityType.IP]
    if "." in text:
        for match in _IPV4_RE.finditer(text):
            before = text[max(0, match.start() - 24):match.start()]
            if _VERSION_CONTEXT_RE.search(before) is None:
                yield Candidate(match.start(), match.end(), EntityType.IP, score)
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
            yield Candidate(match.start(), match.start() + len(candidate), EntityType.IP,
                             score)


#: The detector of each entity type but PHONE, in the order they run.
DETECTORS: dict[EntityType, Detector] = {
    EntityType.EMAIL: _email, EntityType.CARD: _card, EntityType.IBAN: _iban,
    EntityType.SSN: _ssn, EntityType.IP: _ip,
}
