"""OpenTelemetry traces: the platform's tracer, and where its spans go.

Until :func:`configure_tracing` installs an SDK provider every span is the API's no-op span
(nothing is recorded, nearly nothing is spent), so a library user, a test or the CLI that
does not ask for traces pays nothing. A process that serves (the API, a Prefect worker)
calls it once at start:

* with an OTLP endpoint (``Settings.otlp_traces_endpoint``: the standard
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``)
  spans are batched and sent by OTLP over HTTP/protobuf, which Langfuse and every
  OpenTelemetry collector read. The exporter reads the other standard variables itself
  (``OTEL_EXPORTER_OTLP_HEADERS`` for credentials, timeout, compression), as does the SDK
  (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``);
* with an ``exporter`` (tests: ``InMemorySpanExporter``) each span is handed to it as it
  ends.

What a span may say: counts, durations, model names, cache hits, codes. Never a question, a
prompt, an answer or a tenant id; the tenant appears only as :func:`tenant_hash`, a keyed
hash that groups a tenant's requests without naming it. Exceptions are not recorded as span
events (OpenTelemetry's default): their messages name the offending value, a tenant id or
a provider's reply quoting the prompt; :func:`open_span` marks a failed span with the
error's code (``error.type``) instead.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util.types import Attributes

from rag_core.errors import RagCoreError

if TYPE_CHECKING:  # the SDK and the exporter load only in a process that sends spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["TENANT_HASH_ATTRIBUTE", "configure_tracing", "mark_failed", "open_span",
           "tenant_hash", "tracer", "tracing_enabled"]

#: The span attribute that carries the tenant (as :func:`tenant_hash`, never the id).
TENANT_HASH_ATTRIBUTE = "rag.tenant_hash"
_TENANT_HASH_HEX = 16

# A proxy until a provider is installed, then delegating to it: safe to take at import.
_TRACER = trace.get_tracer("rag_core")
_lock = threading.Lock()
_installed = False  # a provider that records was seen (it cannot be replaced afterwards)


def tracing_enabled() -> bool:
    """Whether spans can be recorded: a provider other than the API's placeholders is
    installed (by :func:`configure_tracing` or by the embedding application). Checked
    first by :func:`open_span`, so that a process without tracing skips the span machinery
    (about 10 microseconds a span here) rather than building no-op spans."""
    global _installed
    if not _installed:
        provider = trace.get_tracer_provider()
        _installed = not isinstance(provider,
                                    trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return _installed


def tracer() -> trace.Tracer:
    """The platform's tracer (no-op until :func:`configure_tracing` installed a provider)."""
    return _TRACER


@contextmanager
def open_span(name: str, *, kind: trace.SpanKind = trace.SpanKind.INTERNAL,
              attributes: Attributes = None) -> Iterator[trace.Span]:
    """A child span of the current one, current for the ``with`` block; an exception
    leaving the block marks it failed by code, without its message (see the module)."""
    if not tracing_enabled():
        yield trace.INVALID_SPAN
        return
    with _TRACER.start_as_current_span(name, kind=kind, attributes=attributes,
                                       record_exception=False,
                                       set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            mark_failed(span, exc)
            raise


def mark_failed(span: trace.Span, exc: BaseException) -> None:
    """Status error and ``error.type``: our error's code, else the exception's class."""
    kind = exc.code.value if isinstance(exc, RagCoreError) else type(exc).__name__
    span.set_attribute("error.type", kind)
    span.set_status(trace.StatusCode.ERROR, kind)


def tenant_hash(tenant: str, key: bytes) -> str:
    """The tenant as a span may carry it: HMAC-SHA256 under a server key (the audit log's),
    cut to 16 hex characters. Keyed, so the hash of a known tenant id cannot be computed
    by whoever reads the traces; equal for every span of one tenant."""
    return hmac.new(key, tenant.encode(), hashlib.sha256).hexdigest()[:_TENANT_HASH_HEX]


def configure_tracing(service_name: str, *, endpoint: str | None = None,
                      exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Send this process's spans to ``endpoint`` (OTLP/HTTP, batched) and/or to
    ``exporter`` (synchronously); with neither, leave tracing as it is and return None.

    The first call installs the process's SDK provider (named ``service_name`` unless
    ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` say otherwise); later calls add
    their exporter to it, since OpenTelemetry lets a process set its provider only once.
    """
    if endpoint is None and exporter is None:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    with _lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
        else:
            provider = TracerProvider(resource=_resource(service_name))
            trace.set_tracer_provider(provider)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        if endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def _resource(service_name: str) -> Resource:
    """The SDK's resource (which reads the standard variables), named ``service_name``
    when they do not name the service."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()
    named = str(detected.attributes.get(SERVICE_NAME, ""))
    if named and not named.startswith("unknown_service"):
        return detected
    return detected.merge(Resource({SERVICE_NAME: service_name}))
