"""The vocabulary of redaction: entity types, their placeholders, findings and candidates.

A :class:`Finding` names a span of the *original* text and its type, never the value, so
findings are safe to log. A :class:`Candidate` is what a detector proposes before overlaps
are resolved; its ``score`` is the detector's confidence (:data:`SCORES`), used to break
ties between overlapping spans of equal length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "PLACEHOLDERS",
    "SCORES",
    "Candidate",
    "Detector",
    "EntityType",
    "Finding",
    "RedactionResult",
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

#: Detector confidence: checksummed entities first, phone numbers (the loosest reading) last.
SCORES: dict[EntityType, float] = {
    EntityType.CARD: 1.0, EntityType.IBAN: 1.0, EntityType.EMAIL: 0.95,
    EntityType.IP: 0.9, EntityType.SSN: 0.85, EntityType.PHONE: 0.75,
}


@dataclass(frozen=True)
class Finding:
    """One redacted span ``[start, end)`` of the original text.

    Only the type and the offsets: a finding never carries the value, so it is safe to log.
    """

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
class Candidate:
    """A span a detector proposes, before overlapping candidates are resolved."""

    start: int
    end: int
    entity_type: EntityType
    score: float


#: A detector: every candidate of its entity type in a text.
Detector = Callable[[str], Iterable[Candidate]]
