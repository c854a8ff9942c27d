"""Redaction of personal data (e-mail, phone, card, IBAN, SSN, IP) before text leaves us.

The package face: import the public names from here. :mod:`~rag_core.pii.redactor` holds
the redactor (and why it is ours and not Presidio), :mod:`~rag_core.pii.detectors` the
validated detectors and what they accept, :mod:`~rag_core.pii.phones` the phone numbers,
:mod:`~rag_core.pii.types` the entity types, placeholders and findings.
"""

from rag_core.pii.detectors import iban_is_valid, luhn_is_valid, ssn_is_valid
from rag_core.pii.redactor import PiiRedactor, default_redactor, find_pii, redact
from rag_core.pii.types import PLACEHOLDERS, EntityType, Finding, RedactionResult

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
