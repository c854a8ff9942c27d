"""Batches: ``POST /v1/batches`` stores a job and returns at once (202); the job runs in
the background (:mod:`rag_core.query.batch_worker`, the batch-query flow's code);
``GET /v1/batches/{id}`` is its state and ``GET /v1/batches/{id}/events`` its answers as
Server-Sent Events (sse-starlette).

The events are read from the database, where the worker wrote them (``rag.batch_events``),
so a stream can be served by any worker process, survives a restart of the one running the
job, and a client reconnecting with ``Last-Event-ID: <seq>`` gets exactly the events after
it. Each event's ``id`` is its sequence number; ``event`` is ``answer`` or ``summary``;
the stream ends after the summary. A batch of another tenant is a 404, the same as a batch
that does not exist.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from rag_core.api.auth import authenticated_tenant
from rag_core.api.routes_query import PROBLEMS
from rag_core.api.schemas import BatchOut, BatchRequest
from rag_core.common.tenancy import TenantId
from rag_core.errors import InputTooLargeError, ResourceNotFoundError
from rag_core.query.batch_run import Question

router = APIRouter(prefix="/v1/batches", tags=["batches"])
Tenant = Annotated[TenantId, Depends(authenticated_tenant)]

#: Events read per database round trip while a stream catches up.
_EVENTS_PER_READ = 200


def _batch_json(job: Any, request: Request, answers: list[dict[str, Any]] | None) -> \
        dict[str, Any]:
    out = BatchOut(
        batch_id=str(job.batch_id), status=job.status, questions=job.question_count,
        answered=job.answered, created_at=job.created_at.isoformat(),
        finished_at=job.finished_at.isoformat() if job.finished_at else None,
        summary=job.summary, answers=answers,
        events_url=str(request.url_for("batch_events", batch_id=str(job.batch_id))))
    return out.model_dump()


@router.post("", status_code=202, response_model=BatchOut, responses=PROBLEMS,
             summary="Queue a batch of questions; answers arrive as events")
def create_batch(body: BatchRequest, tenant: Tenant, request: Request) -> Any:
    platform = request.app.state.platform
    settings = platform.settings
    limit = min(settings.api.max_batch_questions, settings.max_batch_questions)
    if len(body.questions) > limit:
        raise InputTooLargeError("the batch", len(body.questions), limit, "questions",
                                 "RAG_API__MAX_BATCH_QUESTIONS")
    questions = []
    for number, item in enumerate(body.questions, start=1):
        if len(item.question) > settings.max_question_chars:
            raise InputTooLargeError(f"questions.{number - 1}.question", len(item.question),
                                     settings.max_question_chars, "characters",
                                     "RAG_MAX_QUESTION_CHARS")
        questions.append(Question(item.id or f"q{number}", item.question))
    job = platform.batch_jobs.submit(tenant, questions)
    data = _batch_json(job, request, None)
    return JSONResponse(data, status_code=202,
                        headers={"Location": f"/v1/batches/{data['batch_id']}"})


@router.get("/{batch_id}", response_model=BatchOut, responses=PROBLEMS,
            summary="A batch's state (and its answers so far with ?answers=true)")
def get_batch(batch_id: str, tenant: Tenant, request: Request,
              answers: Annotated[bool, Query(description="include the answer events")] = False,
              ) -> Any:
    jobs = request.app.state.platform.batch_jobs
    job = jobs.get(tenant, batch_id)
    if job is None:
        raise ResourceNotFoundError("batch", batch_id)
    listed = None
    if answers:
        listed = [e.data for e in jobs.events(tenant, batch_id, after_seq=0,
                                               limit=job.question_count + 1)
                  if e.kind == "answer"]
    return _batch_json(job, request, listed)


def _last_seq(value: str) -> int:
    # Digits only: the header's documented pattern, checked by FastAPI (a 422 naming it).
    return int(value) if value else 0


@router.get("/{batch_id}/events", name="batch_events", responses=PROBLEMS,
            response_class=EventSourceResponse,
            summary="The batch's answers as Server-Sent Events, then a summary")
async def batch_events(batch_id: str, tenant: Tenant, request: Request,
                       last_event_id: Annotated[str, Header(
                           pattern=r"^[0-9]{0,12}$",
                           description="resume after this event (the id of the last one "
                                       "received)")] = "") -> Any:
    platform = request.app.state.platform
    jobs = platform.batch_jobs
    after = _last_seq(last_event_id)
    job = await run_in_threadpool(jobs.get, tenant, batch_id)
    if job is None:
        raise ResourceNotFoundError("batch", batch_id)
    poll_s = platform.settings.api.sse_poll_interval_s

    async def stream() -> AsyncIterator[ServerSentEvent]:
        seq = after
        while True:
            events = await run_in_threadpool(jobs.events, tenant, batch_id, after_seq=seq,
                                             limit=_EVENTS_PER_READ)
            for event in events:
                seq = event.seq
                yield ServerSentEvent(data=json.dumps(event.data), event=event.kind,
                                      id=str(event.seq))
                if event.kind == "summary":
                    return
            if not events:
                await asyncio.sleep(poll_s)

    return EventSourceResponse(stream(), ping=platform.settings.api.sse_ping_s)
