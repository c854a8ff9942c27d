"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): zero 5xx, every error
a problem+json, nothing leaked, and every documented 2xx body in its documented shape.

The document is read from the running server (``/openapi.json`` over real HTTP), so what
is fuzzed is what a client would generate code from. Every operation gets valid and
invalid inputs (schemathesis' positive and negative generation), sent with the tenant's
live key for most cases and with no key or an unknown one for the rest: a refusal must
look the same as any other problem.

The cases come from ``APIOperation.as_strategy`` under Hypothesis' own ``@given``, one test
per operation and mode, rather than from ``schemathesis.pytest.from_fixture``: that lazy
loader sets ``request.node._nodeid``, which pytest 9.2 no longer has (AttributeError). A
separate test pins the document's operations to :data:`OPERATIONS`, so a new route fails
here until it is fuzzed too.

The event stream (``GET /v1/batches/{batch_id}/events``) cannot hang the run: the ids the
fuzzer makes up are not batches of the tenant, so it answers 404 at once; and were one to
stream, schemathesis stops reading an event stream after ``max_stream_events`` events or
the request timeout, whichever comes first (its 200 has no documented body schema, so only
the status, the media type and the leak checks apply to it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.api.conftest import Api

PROBLEM = "application/problem+json"
#: Examples per operation and generation mode, bounded for CI: ~800 requests in all, about
#: 25 s of the file's time on two busy cores (the rest is the module's corpus and server).
MAX_EXAMPLES = 100
#: Who calls: the live key most of the time, no key or an unknown one for a share of cases.
CALLERS = ("live", "live", "live", "live", "none", "unknown")
UNKNOWN_KEY = "rag_0123456789ab_" + "Z" * 43
#: What no response may contain (lower case): a traceback, SQL, the driver's name.
LEAKS = ("traceback", 'file "', "select ", "insert into", "update rag.", "delete from",
         "psycopg", "sqlstate")
#: The fake LLM's raw reply (rag_testing.fake_groq): its envelope's ids and fingerprint, its
#: message content quoted as a JSON string, its error bodies. A response may carry the answer
#: text the platform extracted, never these.
RAW_LLM = ("chatcmpl-", "fp_fake", "req_fake", '\\"answers\\"', "fake error")
REQUIRED_PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")
#: Every operation of the document, and whether it takes any input (a body or parameters)
#: to make invalid; a test below keeps this and the document equal.
OPERATIONS = {("POST", "/v1/query"): True, ("POST", "/v1/batches"): True,
              ("GET", "/v1/batches/{batch_id}"): True,
              ("GET", "/v1/batches/{batch_id}/events"): True, ("GET", "/healthz"): False,
              ("GET", "/readyz"): False, ("GET", "/metrics"): False}
#: One test per operation and generation mode (valid data everywhere, invalid where
#: there is input).
FUZZED = [(method, path, mode) for (method, path), has_input in OPERATIONS.items()
          for mode in GenerationMode if has_input or mode is GenerationMode.POSITIVE]


@pytest.fixture(scope="module")
def api_schema(api: Api) -> OpenApiSchema:
    """The running service's own document, fuzzed against that same service."""
    loaded = schemathesis.openapi.from_url(f"{api.url}/openapi.json", timeout=30)
    loaded.config.update(base_url=api.url, request_timeout=10)
    # An event stream is read for at most this many events (or the timeout): never hangs.
    loaded.config.max_stream_events = 3
    # A body over RAG_API__MAX_BODY_BYTES is refused unread (413): a rejection too.
    rejection = loaded.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return loaded


def _headers(api: Api, caller: str) -> dict[str, str]:
    if caller == "live":
        return {"Authorization": f"Bearer {api.key}"}
    if caller == "unknown":
        return {"Authorization": f"Bearer {UNKNOWN_KEY}"}
    return {}


def _batch_questions(body: object) -> list[dict[str, Any]]:
    questions = body.get("questions") if isinstance(body, dict) else None
    return [q for q in questions if isinstance(q, dict)] if isinstance(questions, list) else []


def _refused_for_what_json_schema_cannot_say(case: Case, response: Response) -> bool:
    """A schema-valid request refused for a rule the document states only in words: a
    configured limit under the schema's ceiling (413: RAG_MAX_QUESTION_CHARS,
    RAG_API__MAX_BATCH_QUESTIONS), or in a batch, question ids that repeat (given or
    defaulted to q<position>) or a question of whitespace only (422)."""
    if not 400 <= response.status_code < 500:
        return False
    code = response.json().get("code")
    if response.status_code == 413:
        return code == "input_too_large"
    if case.operation.path != "/v1/batches" or response.status_code != 422:
        return False
    questions = _batch_questions(case.body)
    ids = [str(q.get("id") or f"q{n}") for n, q in enumerate(questions, start=1)]
    blank = [q for q in questions if not str(q.get("question", "")).strip()]
    return ((code == "invalid_input" and len(set(ids)) != len(ids))
            or (code == "invalid_question" and bool(blank)))


def _checks(case: Case, caller: str, response: Response) -> list[Callable[..., Any]]:
    """schemathesis' checks that apply: whether valid data is accepted and invalid data
    refused is a question only the live key can ask (others get 401)."""
    checks: list[Callable[..., Any]] = [
        not_a_server_error, status_code_conformance, content_type_conformance,
        response_headers_conformance, response_schema_conformance]
    if caller == "live":
        checks.append(negative_data_rejection)
        if not _refused_for_what_json_schema_cannot_say(case, response):
            checks.append(positive_data_acceptance)
    return checks


def assert_problem_shape(response: Response) -> None:
    """A 4xx is RFC 9457 problem details with the platform's typed code."""
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(PROBLEM), (response.status_code, content_type,
                                              response.text[:300])
    body = response.json()
    assert isinstance(body, dict), body
    missing = [name for name in REQUIRED_PROBLEM_FIELDS if not body.get(name)]
    assert missing == [], (missing, body)
    assert body["status"] == response.status_code, body
    assert body["type"] == f"/problems/{body['code']}", body


def check_response(api: Api, case: Case, caller: str, response: Response,
                   headers: dict[str, str]) -> None:
    """Everything one fuzzed response must satisfy."""
    where = (case.method, case.formatted_path, response.status_code, response.text[:500])
    assert response.status_code < 500, where
    text = response.text.lower()
    assert [leak for leak in LEAKS if leak in text] == [], where
    assert [marker for marker in RAW_LLM if marker in response.text] == [], where
    if 400 <= response.status_code < 500:
        assert_problem_shape(response)
    if caller != "live" and case.operation.path.startswith("/v1/"):
        # Refused before anything of the tenant is read: 401, or a body refused unread.
        assert response.status_code in (401, 413, 415, 422), where
    case.validate_response(response, checks=_checks(case, caller, response), headers=headers)


def _takes_input(operation: APIOperation) -> bool:
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def test_the_document_lists_exactly_the_fuzzed_operations(api_schema: OpenApiSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    listed = {(op.method.upper(), op.path): _takes_input(op) for op in operations}
    assert listed == OPERATIONS


# The server runs in this process: when its database pool opens a connection, a
# psycopg_pool worker thread jitters the connection's lifetime with the global random
# module, and Hypothesis, seeing that state move during a draw, blames the strategy.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize(("method", "path", "mode"), FUZZED,
                         ids=[f"{method} {path} {mode}" for method, path, mode in FUZZED])
def test_fuzzed_requests_get_no_5xx_and_only_problem_errors(
        api: Api, api_schema: OpenApiSchema, method: str, path: str,
        mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck), print_blob=True)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode),
                      caller=st.sampled_from(CALLERS))
    def fuzz(case: Case, caller: str) -> None:
        headers = _headers(api, caller)
        check_response(api, case, caller, case.call(headers=headers), headers)

    fuzz()
