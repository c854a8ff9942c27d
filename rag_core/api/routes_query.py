"""``POST /v1/query``: one question, answered through the platform's query service.

A question that failed (rate limited, breaker open, no documents...) is answered with the
problem of its typed code and status, ``Retry-After`` included where the limit or the
breaker tells when to come back; the failure was audited by the query service like any
answer.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rag_core.api.auth import authenticated_tenant
from rag_core.api.problems import PROBLEM_MEDIA_TYPE, error_problem, problem
from rag_core.api.schemas import AnswerOut, ProblemOut, QueryRequest
from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.errors import InputTooLargeError, InvalidQuestionError

router = APIRouter(prefix="/v1", tags=["query"])

#: Problem responses, their schema under application/problem+json alone: a ``model`` would
#: put it under application/json, a media type no error of the API has.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": description,
             "content": {PROBLEM_MEDIA_TYPE: {"schema": ProblemOut.model_json_schema()}}}
    for status, description in [
        (401, "no API key, or not a valid one"),
        (404, "no such batch (or another tenant's), or the key's tenant no longer exists"),
        (413, "the body or the question is too large"),
        (415, "the body is not application/json"),
        (422, "the request is not valid (the problem names the field)"),
        (429, "rate limited or over the token quota (Retry-After)"),
        (503, "a dependency is unavailable or the LLM's breaker is open (Retry-After)"),
    ]}

Tenant = Annotated[TenantId, Depends(authenticated_tenant)]


@router.post("/query", response_model=AnswerOut, responses=PROBLEMS,
             summary="Answer one question from the tenant's documents")
def query(body: QueryRequest, tenant: Tenant, request: Request) -> Any:
    platform = request.app.state.platform
    try:
        # The query service checks the configured limits itself, so a refused question is
        # audited like any other (RAG_MAX_QUESTION_CHARS: 413 naming the field).
        answer = platform.query_service.ask(tenant, body.question, session_id=body.session_id)
    except (InputTooLargeError, InvalidQuestionError) as exc:
        return error_problem(exc, field="question")
    if answer.error_code is None:
        return JSONResponse(answer.as_dict())
    code = ErrorCode(answer.error_code)
    retry_after = answer.retry_after_s
    if code is ErrorCode.CIRCUIT_OPEN and retry_after is None:
        retry_after = _breaker_retry_after(platform)
    return problem(code, answer.error or code.value, retry_after_s=retry_after)


def _breaker_retry_after(platform: Any) -> float | None:
    """Seconds until the LLM's breaker lets a probe through, when Redis can tell."""
    client = platform.llm_client
    if client is None:
        return None
    snapshot = client.breaker.snapshot()
    if snapshot.open_until is None:
        return None
    # The breaker's clock is epoch seconds in every process (rag_core.llm.breaker).
    return max(0.0, float(snapshot.open_until) - time.time())
