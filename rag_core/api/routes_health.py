"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (PostgreSQL, both
Redis databases, the LLM breaker), ``/metrics`` (Prometheus text, summed over the service's
worker processes).

Readiness fails (503) only for what the service cannot serve without: the database. Redis
down is reported but ready (the outage policy keeps answering), and an open breaker too
(cached answers still flow; new questions get 503 with Retry-After from the query route).
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from rag_core.api.schemas import HealthOut, ReadyOut
from rag_core.common import metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz() -> Any:
    return {"status": "ok", "pid": os.getpid()}


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # a probe reports any failure, by its type only
        return {"ok": False, "error": type(exc).__name__,
                "ms": round((time.perf_counter() - started) * 1000, 3)}
    result: dict[str, Any] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000,
                                                      3)}
    if isinstance(detail, dict):
        result.update(detail)
    return result


@router.get("/readyz", response_model=ReadyOut, summary="Dependencies reachable",
            responses={503: {"model": ReadyOut, "description": "the database is unreachable"}})
def readyz(request: Request) -> Any:
    platform = request.app.state.platform

    def database() -> None:
        with platform.database.unscoped_session() as conn:
            conn.execute("SELECT 1")

    def breaker() -> dict[str, Any]:
        client = platform.llm_client
        if client is None:
            return {"state": "none", "reason": "no LLM configured (extractive answers)"}
        snapshot = client.breaker.snapshot()
        return {"state": snapshot.state.value, "open_until": snapshot.open_until}

    checks = {
        "database": _timed(database),
        "redis_cache": _timed(lambda: platform.redis.ping()),
        "redis_control": _timed(lambda: platform.redis_control.ping()),
        "breaker": _timed(breaker),
        "audit_writer": _timed(lambda: platform.buffered_audit_log.stats().as_dict()),
    }
    ready = checks["database"]["ok"]
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (summed over worker processes)",
            response_class=Response)
def prometheus_metrics() -> Response:
    body, content_type = metrics.render_metrics()
    return Response(body, media_type=content_type)
