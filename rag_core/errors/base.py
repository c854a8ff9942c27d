"""The root of the exception tree and the helpers its messages share."""

from __future__ import annotations

from typing import ClassVar

from rag_core.codes import ErrorCode

#: Raw model output and error bodies are cut to this many characters in errors: enough to see
#: what went wrong in a log line, not so much that a runaway answer floods the log.
RAW_TEXT_LIMIT = 500


def truncate(text: str, limit: int = RAW_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, marked with the original length when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text)} chars]"


def shown(value: object, limit: int = 80) -> object:
    """A value as it may appear in a message: long strings are cut."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


class RagCoreError(Exception):
    """Base class of every error raised on purpose by the platform."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
