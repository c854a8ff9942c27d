"""The FastAPI application: ``create_app()`` builds it over one :class:`Platform`.

Each worker process of ``rag serve`` calls :func:`create_app` (uvicorn's ``factory``
mode) and so owns its platform: its own database pool, Redis clients, embedder, buffered
audit writer and background batch runner. What must hold across workers (breaker, rate
limits, quotas, caches, LLM-call slots) is in Redis already; metrics are summed across
workers by prometheus_client's multiprocess mode (``/metrics``).

The lifespan builds everything a request needs before the first one is accepted (the
embedding model, the query service, the key resolver), starts the batch runner and the RLS
overhead sampler (:mod:`rag_core.ops.rls_sampler`, where an admin connection is allowed),
and on shutdown stops both, letting the runner finish its current group, and closes the
platform (which flushes the audit writer).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from rag_core.api import docs, routes_batches, routes_health, routes_query
from rag_core.api.middleware import RequestLimits, RequestTelemetry
from rag_core.api.problems import install_problem_handlers
from rag_core.common import metrics, tracing
from rag_core.composition import Platform, audit_hash_key
from rag_core.config import Settings, get_settings
from rag_core.ops import rls_sampler

_log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
API_VERSION = "1"


def _start(platform: Platform, *, run_batches: bool) -> None:
    """Build what the first request needs (slow parts: the model, the pools)."""
    platform.query_service  # noqa: B018  (a cached property: built here, not on request 1)
    platform.key_resolver  # noqa: B018
    platform.batch_jobs  # noqa: B018
    if run_batches:
        platform.batch_worker.start()


def create_app(settings: Settings | None = None, *, platform: Platform | None = None,
               run_batches: bool = True) -> FastAPI:
    """The service's application. ``platform`` lets a test share its own (then it is not
    closed here); ``run_batches=False`` serves without running batch jobs in this process."""
    settings = settings if settings is not None else get_settings()
    owned = platform is None
    the_platform = platform if platform is not None else Platform(settings, serving=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.configure_tracing("rag-api", endpoint=settings.otlp_traces_endpoint)
        metrics.forget_dead_workers()
        await run_in_threadpool(_start, the_platform, run_batches=run_batches)
        sampler = rls_sampler.sampler_for(settings, the_platform.database,
                                          the_platform.admin_connection,
                                          the_platform.vector_store)
        if sampler is not None:
            sampler.start()
        app.state.platform = the_platform
        app.state.trace_key = audit_hash_key(settings)
        _log.info("rag api ready (pid %s)", os.getpid())
        try:
            yield
        finally:
            if sampler is not None:
                await run_in_threadpool(sampler.close)
            if run_batches:
                await run_in_threadpool(the_platform.batch_worker.stop)
            if owned:
                await run_in_threadpool(the_platform.close)

    app = FastAPI(
        title="rag-platform API", version=API_VERSION, lifespan=lifespan, docs_url=None,
        description="Multi-tenant retrieval-augmented answers. Authenticate with "
                    "`Authorization: Bearer <key>` (`rag tenant key create`). Errors are "
                    "RFC 9457 problem details with the platform's typed `code`.")
    install_problem_handlers(app)
    app.include_router(routes_query.router)
    app.include_router(routes_batches.router)
    app.include_router(routes_health.router)
    docs.install(app)  # /docs with Swagger UI served locally (works offline)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    # Outermost first: the telemetry sees every response, limits included.
    app.add_middleware(RequestLimits, max_body_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestTelemetry)
    return app
