"""ASGI middleware of the service: bounded bodies, JSON only, and one span and one
measurement per request.

Written as plain ASGI callables rather than Starlette's ``BaseHTTPMiddleware``: that one
runs each request's body through an extra task and memory stream, which costs more per
request than everything a cached answer does, and it breaks streaming (the SSE routes).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_core.api.problems import problem
from rag_core.codes import ErrorCode
from rag_core.common import metrics
from rag_core.errors import InputTooLargeError

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_JSON = b"application/json"


class RequestLimits:
    """Refuses a body that is not JSON (415) or longer than ``max_body_bytes`` (413): a
    declared length is checked before anything is read, a chunked body while it arrives."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != _JSON:
            shown = media_type.decode("latin-1")[:80] or "none"
            await problem(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                          f"the body must be application/json, not {shown!r}")(
                scope, receive, send)
            return
        declared = headers.get(b"content-length")
        limit = self.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await problem(ErrorCode.INPUT_TOO_LARGE,
                          f"the request body is {declared.decode('latin-1')[:20]} bytes, "
                          f"more than {limit} (RAG_API__MAX_BODY_BYTES)")(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Handled by the app's RagCoreError handler: a 413 problem.
                    raise InputTooLargeError("the request body", received, limit, "bytes",
                                             "RAG_API__MAX_BODY_BYTES")
            return message

        await self.app(scope, counted, send)


class RequestTelemetry:
    """The root span of each request and its count and duration by route template (never
    the raw path: it may hold a batch id), method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tracer = trace.get_tracer("rag_core.api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = scope["method"]

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # Exception text stays out of traces (it may name a tenant or quote a provider);
        # a failure shows as the response status.
        metrics.HTTP_REQUESTS_IN_FLIGHT.inc()
        with self._tracer.start_as_current_span(
                f"{method} request", kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": method}, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                await self.app(scope, receive, recorded)
            finally:
                metrics.HTTP_REQUESTS_IN_FLIGHT.dec()
                route = _route_template(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
                metrics.HTTP_REQUEST_SECONDS.labels(route).observe(
                    time.perf_counter() - started)


def _route_template(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label: a scanner's random URLs must not grow the series.
    return path if isinstance(path, str) else "unmatched"
