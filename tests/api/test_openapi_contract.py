"""The OpenAPI document says what the service does: the mismatches that fuzzing the
document (test_fuzz_openapi) found, each pinned over real HTTP."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_api_http import PROBLEM, assert_problem


@pytest.fixture(scope="module")
def document(api: Api) -> dict[str, Any]:
    with api.client(key="") as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/v1/query"), ("post", "/v1/batches"), ("get", "/v1/batches/{batch_id}"),
    ("get", "/v1/batches/{batch_id}/events")])
def test_problems_are_documented_as_problem_json_with_their_schema(
        document: dict[str, Any], method: str, path: str) -> None:
    # Found: errors were documented under application/json (a media type no error has)
    # and their application/problem+json entry had no schema, so nothing checked them.
    responses = _operation(document, method, path)["responses"]
    for status in ("401", "404", "422"):
        content = responses[status]["content"]
        assert list(content) == [PROBLEM], (status, content)
        schema = content[PROBLEM]["schema"]
        assert set(schema["required"]) == {"type", "title", "status", "detail", "code"}


def test_an_unknown_batch_is_a_documented_404(api: Api, document: dict[str, Any]) -> None:
    # Found: GET /v1/batches/{id} and its events answered 404, which was not documented.
    with api.client() as client:
        for path in ("/v1/batches/nope", "/v1/batches/nope/events"):
            assert_problem(client.get(path), 404, "not_found")
    for path in ("/v1/batches/{batch_id}", "/v1/batches/{batch_id}/events"):
        assert "404" in _operation(document, "get", path)["responses"]


def test_the_session_id_shape_is_documented_and_refused_at_the_edge(
        api: Api, document: dict[str, Any]) -> None:
    # Found: the document allowed any 1-200 characters; the query path takes only the shape
    # of secrets.token_urlsafe(32), so a "valid" session id came back 422.
    schema = document["components"]["schemas"]["QueryRequest"]["properties"]["session_id"]
    shape = schema["anyOf"][0]
    assert (shape["minLength"], shape["maxLength"]) == (43, 256)
    assert shape["pattern"] == "^[A-Za-z0-9_-]+$"
    with api.client() as client:
        short = client.post("/v1/query", json={"question": "Is sleep linked to memory?",
                                               "session_id": "abc"})
        assert assert_problem(short, 422, "invalid_input")["field"] == "session_id"
        issued = client.post("/v1/query", json={"question": "Is sleep linked to memory?",
                                                "session_id": secrets.token_urlsafe(32)})
    assert issued.status_code == 200, issued.text


def test_last_event_id_is_documented_as_digits_and_refused_otherwise(
        api: Api, document: dict[str, Any]) -> None:
    # Found: the header was documented as any string or null; "null" (or any non-number)
    # was then refused, and nothing told a client the format.
    parameters = _operation(document, "get", "/v1/batches/{batch_id}/events")["parameters"]
    header = next(p for p in parameters if p["in"] == "header")
    assert header["name"] == "last-event-id" and not header.get("required", False)
    assert header["schema"]["type"] == "string"
    assert header["schema"]["pattern"] == "^[0-9]{0,12}$"
    with api.client() as client:
        created = client.post("/v1/batches", json={"questions": [{"question": "hi"}]})
        events = f"/v1/batches/{created.json()['batch_id']}/events"
        for value in ("null", "-1", "1" * 13):
            refused = client.get(events, headers={"Last-Event-ID": value})
            assert assert_problem(refused, 422, "invalid_input")["field"] == "last-event-id"


def test_questions_document_that_they_hold_no_nul(api: Api,
                                                  document: dict[str, Any]) -> None:
    # Found: a question with a NUL matched the document and was refused (invalid_question:
    # PostgreSQL text cannot hold one); the document now says so, the refusal is unchanged.
    schemas = document["components"]["schemas"]
    for model in ("QueryRequest", "BatchQuestion"):
        assert schemas[model]["properties"]["question"]["not"] == {"pattern": "\\x00"}
    with api.client() as client:
        single = client.post("/v1/query", json={"question": "vitamin\x00D"})
        batch = client.post("/v1/batches", json={"questions": [{"question": "a\x00b"}]})
    assert "NUL" in str(assert_problem(single, 422, "invalid_question")["detail"])
    assert "NUL" in str(assert_problem(batch, 422, "invalid_question")["detail"])
