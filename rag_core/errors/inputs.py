"""Errors about what a caller gave: settings, options, files, ids, vectors."""

from __future__ import annotations

from pathlib import Path

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError, shown


class ConfigurationError(RagCoreError):
    """A setting or option is missing or invalid."""

    code = ErrorCode.CONFIGURATION_INVALID

    def __init__(self, setting: str, value: object, reason: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"setting {setting}={shown(value)!r} is invalid: {reason}")


class InputError(RagCoreError, ValueError):
    """Data given by a caller cannot be used."""

    code = ErrorCode.INVALID_INPUT


class InvalidQuestionIdsError(InputError):
    """Question ids are not one per question, not unique, or empty."""

    def __init__(self, question_ids: list[str], questions: int) -> None:
        self.value = question_ids
        super().__init__(f"question ids {shown(repr(question_ids), 200)} must be non-empty, "
                         f"unique and one per question ({questions} questions)")


class InputTooLargeError(InputError):
    """An input is over its configured limit (``what`` is measured in ``unit``)."""

    code = ErrorCode.INPUT_TOO_LARGE

    def __init__(self, what: str, size: int, limit: int, unit: str, setting: str) -> None:
        self.what = what
        self.value = size
        self.limit = limit
        self.setting = setting
        super().__init__(f"{what} has {size} {unit}, over the limit of {limit} ({setting})")


class InvalidQuestionError(InputError):
    """A question holds what cannot be stored or searched: a NUL or a lone surrogate."""

    code = ErrorCode.INVALID_QUESTION

    def __init__(self, number: int, reason: str) -> None:
        self.value = number
        super().__init__(f"question {number}: {reason}")


def unstorable_text(text: str) -> str | None:
    """Why ``text`` cannot go into PostgreSQL text (NUL, a lone UTF-16 surrogate), or None."""
    if "\x00" in text:
        return f"contains a NUL character at {text.index(chr(0))}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate at {exc.start}"
    return None


class QuestionFileError(InputError):
    """A questions file cannot be used (unknown format, missing columns, bad line)."""

    code = ErrorCode.QUESTION_FILE_INVALID

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"questions file {path!r}: {reason}")


class SourceError(InputError):
    """An ingestion source as a whole cannot be read (missing, or of an unknown kind)."""

    code = ErrorCode.SOURCE_INVALID

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"cannot ingest {path!r}: {reason}")


class DatasetError(InputError):
    """A benchmark dataset (a BEIR folder) is missing or malformed."""

    code = ErrorCode.DATASET_INVALID

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"dataset {self.path!r}: {reason}")


class InvalidTokenCountError(InputError):
    """A token count is not a non-negative integer."""

    code = ErrorCode.INVALID_TOKEN_COUNT

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        self.value = value
        super().__init__(f"{name}={value!r} is invalid: expected a non-negative integer")


class SessionKeyTooShortError(InputError):
    """The session hashing key is too short (its length is reported, never its bytes)."""

    code = ErrorCode.SESSION_KEY_TOO_SHORT

    def __init__(self, length: int, minimum: int) -> None:
        self.length = length
        self.minimum = minimum
        super().__init__(
            f"session hashing key is {length} bytes long; at least {minimum} random bytes "
            "are required (e.g. secrets.token_bytes(32))"
        )


class InvalidSessionIdError(InputError):
    """A value presented as a session id is not one the platform could have issued.

    The id is a secret: only its type and length are reported.
    """

    code = ErrorCode.INVALID_SESSION_ID

    def __init__(self, value: object) -> None:
        self.value_type = type(value).__name__
        self.length = len(value) if isinstance(value, str | bytes) else None
        super().__init__(
            f"invalid session id (type {self.value_type}, length {self.length}): expected "
            "43-256 URL-safe base64 characters"
        )


class DimensionMismatchError(InputError):
    """A vector does not have the dimension its embedding model declares."""

    code = ErrorCode.DIMENSION_MISMATCH

    def __init__(self, model_key: str, expected: int, actual: int) -> None:
        self.model_key = model_key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"vector of dimension {actual} given for model {model_key!r}, which has {expected}"
        )
