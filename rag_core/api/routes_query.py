"""``POST /v1/query``: one question, answered through the platform's query service.

A question that failed (rate limited, breaker open, no documents...) is answered with the
problem of its typed code and status, ``Retry-After`` included where the limit or the
breaker tells when to come back; the failure was audited by the query service like any
answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rag_core.api.auth import authenticated_tenant
from rag_core.api.problems import PROBLEM_MEDIA_TYPE, problem
from rag_core.api.schemas import AnswerOut, ProblemOut, QueryRequest
from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.errors import InputTooLargeError

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
    limit = platform.settings.max_question_chars
    if len(body.question) > limit:
        raise InputTooLargeError("the question", len(body.question), limit, "characters",
                                 "RAG_MAX_QUESTION_CHARS")
    answer = platform.query_service.ask(tenant, body.question, session_id=body.session_id)
    data = answer.as_dict()
    if answer.error_code is None:
        return JSONResponse(data)
    code = ErrorCode(answer.error_code)
    return problem(code, answer.error or code.value, field="question"
                   if code.category.value == "invalid_input" else None,
                   retry_after_s=answer.retry_after_s)
