"""The HTTP API over real HTTP: authentication, validation, problems, queries, batches
with their Server-Sent Events, health, metrics and the OpenAPI document."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from tests.api.conftest import Api
from tests.api.sse import read_events

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"/problems/{code}" and body["title"] and body["detail"]
    text = response.text.lower()
    for leak in ("traceback", "select ", "insert ", "psycopg", 'file "'):
        assert leak not in text
    return dict(body)


def test_health_and_readiness(api: Api) -> None:
    with api.client(key="") as client:
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["redis_cache"]["ok"]
    assert checks["redis_control"]["ok"]
    assert checks["breaker"]["state"] == "closed"
    assert checks["audit_writer"]["ok"] and checks["audit_writer"]["failures"] == 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"},
                                     {"X-API-Key": "rag_0123456789ab_" + "A" * 43}])
def test_no_or_unknown_key_is_401(api: Api, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=api.url, headers=headers) as client:
        response = client.post("/v1/query", json={"question": "Does vitamin D help?"})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_query_answers_with_sources_and_tokens_then_hits_the_cache(api: Api) -> None:
    question = f"What do cells do with glucose? {uuid.uuid4().hex[:6]}"
    with api.client() as client:
        first = client.post("/v1/query", json={"question": question})
        second = client.post("/v1/query", json={"question": question})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["answer"] and body["sources"] and body["citations"]
    assert body["prompt_tokens"] > 0 and body["completion_tokens"] > 0
    assert body["error_code"] is None and body["cache_hit"] is False
    assert "question" not in body
    again = second.json()
    assert again["cache_hit"] is True and again["answer"] == body["answer"]


@pytest.mark.parametrize(("body", "field"), [
    ({"question": "x", "tenant_id": "tn_" + "0" * 32}, "tenant_id"),
    ({"questoin": "typo"}, "question"),
    ({"question": ""}, "question"),
    ({"question": 42}, "question"),
])
def test_invalid_bodies_name_the_field(api: Api, body: dict[str, object], field: str) -> None:
    with api.client() as client:
        problem = assert_problem(client.post("/v1/query", json=body), 422, "invalid_input")
    assert problem["field"] == field


def test_sizes_and_media_types(api: Api) -> None:
    limit = api.platform.settings.max_question_chars
    with api.client() as client:
        long = assert_problem(client.post("/v1/query", json={"question": "a" * (limit + 1)}),
                              413, "input_too_large")
        assert str(limit) in str(long["detail"])
        assert_problem(client.post("/v1/query", content=b"question=hi",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}),
                       415, "unsupported_media_type")
        too_big = b'{"question": "' + b"a" * api.platform.settings.api.max_body_bytes + b'"}'
        assert_problem(client.post("/v1/query", content=too_big,
                                   headers={"Content-Type": "application/json"}),
                       413, "input_too_large")
        assert_problem(client.post("/v1/query", content=b'{"question": ',
                                   headers={"Content-Type": "application/json"}),
                       422, "invalid_input")
        assert_problem(client.get("/v1/nowhere"), 404, "not_found")
        assert_problem(client.delete("/v1/query"), 405, "method_not_allowed")


def test_batch_runs_in_the_background_and_streams_its_answers(api: Api) -> None:
    questions = [{"id": f"c{i}", "question": f"Is protein {i} linked to disease?"}
                 for i in range(7)]
    with api.client() as client:
        created = client.post("/v1/batches", json={"questions": questions})
        assert created.status_code == 202, created.text
        batch = created.json()
        assert created.headers["location"] == f"/v1/batches/{batch['batch_id']}"
        assert batch["questions"] == 7 and batch["status"] in ("queued", "running", "done")
        events = read_events(client, f"/v1/batches/{batch['batch_id']}/events")
        answers = [e for e in events if e.event == "answer"]
        assert [e.data["question_id"] for e in answers] == [q["id"] for q in questions]
        assert all(e.data["answer"] and e.data["sources"] and e.data["citations"]
                   for e in answers)
        assert all(e.data["prompt_tokens"] > 0 for e in answers)
        assert [int(e.id or 0) for e in events] == list(range(1, 9))
        summary = events[-1]
        assert summary.event == "summary" and summary.data["questions"] == 7
        assert summary.data["answered"] == 7
        assert summary.data["prompt_tokens"] == sum(e.data["prompt_tokens"] for e in answers)
        # A client that reconnects after event 3 gets exactly the rest.
        rest = read_events(client, f"/v1/batches/{batch['batch_id']}/events",
                           last_event_id="3")
        assert [e.id for e in rest] == [e.id for e in events[3:]]
        state = client.get(f"/v1/batches/{batch['batch_id']}", params={"answers": "true"})
    assert state.status_code == 200
    done = state.json()
    assert done["status"] == "done" and done["answered"] == 7
    assert [a["question_id"] for a in done["answers"]] == [q["id"] for q in questions]


def test_batch_limits(api: Api) -> None:
    limit = api.platform.settings.api.max_batch_questions
    with api.client() as client:
        too_many = client.post("/v1/batches", json={
            "questions": [{"question": f"q {i}"} for i in range(limit + 1)]})
        assert_problem(too_many, 413, "input_too_large")
        assert_problem(client.post("/v1/batches", json={"questions": []}), 422,
                       "invalid_input")
        bad_id = client.post("/v1/batches", json={"questions": [{"id": "a b",
                                                                 "question": "x"}]})
        assert assert_problem(bad_id, 422, "invalid_input")["field"] == "questions.0.id"


def test_another_tenants_batch_is_indistinguishable_from_a_missing_one(api: Api) -> None:
    settings = api.platform.settings
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        other = tenant_admin.create_tenant(conn, display_name="other api tenant")
    try:
        other_key = api.platform.api_keys.create(other, "other").key
        with api.client() as client:
            mine = client.post("/v1/batches", json={"questions": [{"question": "hi"}]})
        batch_id = mine.json()["batch_id"]
        with api.client(key=other_key) as client:
            theirs = client.get(f"/v1/batches/{batch_id}")
            missing = client.get(f"/v1/batches/{uuid.uuid4()}")
            stream = client.get(f"/v1/batches/{batch_id}/events")
            malformed = client.get("/v1/batches/not-a-uuid")
        for response in (theirs, missing, stream, malformed):
            assert_problem(response, 404, "not_found")
        assert theirs.json().keys() == missing.json().keys()
    finally:
        with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
            tenant_admin.delete_tenant(conn, other)


def test_metrics_have_bounded_labels(api: Api) -> None:
    with api.client() as client:
        client.post("/v1/query", json={"question": "Is sleep linked to memory?"})
        client.get(f"/v1/batches/{uuid.uuid4()}")
        text = client.get("/metrics").text
    assert 'rag_http_requests_total{method="POST",route="/v1/query",status="200"}' in text \
        or 'route="/v1/query"' in text
    assert 'route="/v1/batches/{batch_id}"' in text
    assert api.tenant not in text and "sleep" not in text


def test_openapi_document_lists_the_routes(api: Api) -> None:
    with api.client(key="") as client:
        document = client.get("/openapi.json").json()
    for path in ("/v1/query", "/v1/batches", "/v1/batches/{batch_id}",
                 "/v1/batches/{batch_id}/events", "/healthz", "/readyz", "/metrics"):
        assert path in document["paths"], path


def test_a_chunked_body_over_the_limit_is_413_and_a_body_not_utf8_is_invalid_json(
        api: Api) -> None:
    # The fuzzer (test_fuzz_openapi) sent bytes that are not UTF-8 and got an undocumented
    # 400 "There was an error parsing the body": FastAPI answers so anything raised while
    # it reads the body, which also hid the size limit of a chunked body (no
    # Content-Length) behind that 400. Now: 413 as for a declared length, and 422 as for a
    # JSON syntax error.
    limit = api.platform.settings.api.max_body_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(limit // 4096 + 1):
            yield b"a" * 4096
        yield b'"}'

    with api.client() as client:
        chunked = client.post("/v1/query", content=chunks(),
                              headers={"Content-Type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert str(limit) in str(assert_problem(chunked, 413, "input_too_large")["detail"])
        for body in (b"\xff", b'{"question": "\xe9t\xe9"}'):
            not_utf8 = client.post("/v1/query", content=body,
                                   headers={"Content-Type": "application/json"})
            assert assert_problem(not_utf8, 422, "invalid_input")["detail"] == \
                "the body is not valid JSON"
