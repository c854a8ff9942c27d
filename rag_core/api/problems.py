"""RFC 9457 problem details: every error the API returns, in one shape.

A body is ``application/problem+json`` with ``type`` (a relative URI naming the typed code,
``/problems/<code>``), ``title``, ``status``, ``detail``, ``code`` (the platform's
:class:`~rag_core.codes.ErrorCode`, the same value as in the audit log and the CLI's
``--json``), and, where one field of the request is at fault, ``field`` (and ``errors`` for
every field pydantic refused). Limits add ``retry_after_s`` and a ``Retry-After`` header.

What goes into ``detail`` is our own message: a :class:`RagCoreError`'s text (which names
the offending value), never a driver's or a provider's text, SQL, or a traceback; anything
not raised on purpose is logged with its traceback and answered with ``internal_error``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag_core.codes import ErrorCategory, ErrorCode
from rag_core.errors import RagCoreError
from rag_core.errors.base import shown

_log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_STATUS_BY_CATEGORY: dict[ErrorCategory, int] = {
    ErrorCategory.INVALID_INPUT: 422,
    ErrorCategory.UNAVAILABLE: 503,
    ErrorCategory.REFUSED: 403,
    ErrorCategory.LIMITED: 429,
    ErrorCategory.FAILED: 500,
    ErrorCategory.INTERNAL: 500,
}
_STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    # A tenant that no longer exists behind a live key: the same answer as a missing resource.
    ErrorCode.UNKNOWN_TENANT: 404,
    ErrorCode.INPUT_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
}
_HTTP_STATUS_CODES: dict[int, ErrorCode] = {
    401: ErrorCode.UNAUTHORIZED, 404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.INPUT_TOO_LARGE, 415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}
_NOT_JSON = "the body is not valid JSON"
#: Retry-After when a dependency is down and nothing tells for how long.
_DEFAULT_RETRY_AFTER_S = 5.0
_TITLES: dict[int, str] = {
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}


def status_of(code: ErrorCode) -> int:
    """The HTTP status of a typed code."""
    return _STATUS_BY_CODE.get(code, _STATUS_BY_CATEGORY[code.category])


def problem(code: ErrorCode, detail: str, *, status: int | None = None,
            field: str | None = None, retry_after_s: float | None = None,
            errors: Sequence[Mapping[str, Any]] | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A problem+json response for ``code`` (the status follows from it unless given)."""
    status = status if status is not None else status_of(code)
    body: dict[str, Any] = {"type": f"/problems/{code.value}",
                            "title": _TITLES.get(status, "Error"), "status": status,
                            "detail": detail, "code": code.value}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = list(errors)
    all_headers = dict(headers or {})
    if retry_after_s is None and status in (429, 503):
        retry_after_s = _DEFAULT_RETRY_AFTER_S
    if retry_after_s is not None:
        body["retry_after_s"] = round(retry_after_s, 3)
        # Retry-After is whole seconds; never 0 for a refusal (clients would spin).
        all_headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="rag"'
    return JSONResponse(body, status_code=status, headers=all_headers,
                        media_type=PROBLEM_MEDIA_TYPE)


def error_problem(exc: RagCoreError, *, field: str | None = None) -> JSONResponse:
    """The problem of one of our own errors (its message names the offending value)."""
    retry = getattr(exc, "retry_after_s", None)
    return problem(exc.code, str(exc), field=field,
                   retry_after_s=float(retry) if isinstance(retry, int | float) else None)


def _field_path(location: Sequence[Any]) -> str:
    # ("body", "questions", 0, "question") -> "questions.0.question"
    parts = [str(p) for p in location]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _validation_problem(exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        # pydantic's "input" may echo a whole body; the field and the message are enough.
        errors.append({"field": _field_path(error.get("loc", ())),
                       "message": str(error.get("msg", "invalid")),
                       "type": str(error.get("type", "value_error"))})
    first = errors[0] if errors else {"field": "", "message": "invalid request",
                                      "type": "value_error"}
    code = ErrorCode.INVALID_INPUT
    status = 422
    if first.get("type") == "json_invalid":
        detail = _NOT_JSON
    else:
        detail = f"{first['field'] or 'request'}: {first['message']}"
    return problem(code, detail, status=status, field=first["field"] or None, errors=errors)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through :func:`problem`."""

    @app.exception_handler(RagCoreError)
    async def _our_error(request: Request, exc: RagCoreError) -> JSONResponse:
        if exc.code.category is ErrorCategory.INTERNAL:
            _log.error("internal error on %s %s: %s", request.method, request.url.path, exc)
        return error_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers anything raised while it reads the body with a bare 400: our own
        # size limit on a chunked body (RequestLimits) and bytes that are not UTF-8, which
        # a JSON body must be. Each gets the answer it has everywhere else.
        if isinstance(exc.__cause__, RagCoreError):
            return error_problem(exc.__cause__)
        if isinstance(exc.__cause__, UnicodeDecodeError):
            return problem(ErrorCode.INVALID_INPUT, _NOT_JSON, status=422)
        code = _HTTP_STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_INPUT)
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code,
                                                                              "error")
        if exc.status_code == 404:
            detail = f"no route {shown(request.url.path)!r}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {shown(request.url.path)!r}"
        return problem(code, detail, status=exc.status_code)

    @app.exception_handler(psycopg.Error)
    async def _database(request: Request, exc: psycopg.Error) -> JSONResponse:
        # The driver's text may quote SQL or values: logged, not returned.
        _log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, psycopg.OperationalError):
            return problem(ErrorCode.DATABASE_UNAVAILABLE, "the database is not reachable")
        return problem(ErrorCode.DATABASE_ERROR, "the database failed the request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unexpected %s on %s %s", type(exc).__name__, request.method,
                       request.url.path)
        return problem(ErrorCode.INTERNAL_ERROR,
                       f"unexpected {type(exc).__name__}; the error is in the server's log",
                       status=500)
