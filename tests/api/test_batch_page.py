"""The batch page (/ui/) and the API docs (/docs) in headless Chromium (Debian's package,
driven by Playwright) against the real service on 127.0.0.1.

The page is used as a person would: a key and questions typed in, Run clicked; what the
test then reads from the page (answers, citations, tokens, sources, summary, error
messages) is checked against the API's own record of the batch. Every request the browser
makes is routed through a guard that refuses, and records, anything not addressed to the
test server: the page and the docs must work with no network beyond it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from rag_core.common.tenancy import TenantId
from rag_core.config import RateLimitPolicy, Settings
from tests.api.conftest import Api, repo_artifacts

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
#: Bound on waiting for a batch's events in the page (the fake LLM answers at once).
WAIT_MS = 90_000
#: Questions a tenant may ask in this module's rate-limit window (one window: the test).
RATE_LIMIT = 3
MAX_BATCH = 10

# Everything one row shows, read from the page's DOM.
READ_ROWS = """rows => rows.map(r => {
  const f = n => r.querySelector(`[data-testid="${n}"]`);
  return {
    id: r.dataset.questionId, status: r.dataset.status,
    question: f("question").textContent, answer: f("answer").textContent,
    error: f("error").hidden ? null : f("error").textContent,
    citations: f("citations").textContent,
    prompt_tokens: f("prompt-tokens").textContent,
    completion_tokens: f("completion-tokens").textContent,
    cache_hit: f("cache-hit").textContent,
    sources: [...r.querySelectorAll('[data-testid="source"]')].map(s => ({
      chunk_id: s.dataset.chunkId, document_id: s.dataset.documentId,
      score: s.dataset.score, text: s.textContent,
      excerpt: s.querySelector('[data-testid="excerpt"]').textContent})),
  };
})"""


@pytest.fixture(scope="module")
def api_settings(api_settings: Settings) -> Settings:
    """The shared service settings with a small batch size and a per-tenant rate limit
    that one test's batch exceeds (a window longer than the module, so it is one window)."""
    return api_settings.model_copy(update={
        "api": api_settings.api.model_copy(update={"max_batch_questions": MAX_BATCH}),
        "rate_limit": RateLimitPolicy(requests_per_minute=RATE_LIMIT, window_s=3600,
                                      tokens_per_day=100_000_000)})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(scripts/system-packages.sh)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A page in a fresh browser context whose every request is checked."""

    page: Page
    base_url: str
    outside: list[str] = field(default_factory=list)


@pytest.fixture()
def tab(browser: Browser, api: Api) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    opened = Tab(page, api.url)

    def guard(route: Route) -> None:
        url = route.request.url
        if url == api.url or url.startswith(api.url + "/"):
            route.continue_()
        else:
            opened.outside.append(url)
            route.abort()

    context.route("**/*", guard)
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> Path:
    path = repo_artifacts() / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    return path


def run_batch(page: Page, key: str, questions: list[str]) -> None:
    page.fill("#api-key", key)
    page.fill("#questions", "\n".join(questions))
    page.click("#run")


def wait_for_summary(page: Page) -> None:
    page.locator('[data-testid="summary"]').wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=WAIT_MS)


def alert_text(page: Page) -> str:
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=WAIT_MS)
    return alert.inner_text()


def batch_from_api(api: Api, batch_id: str, key: str | None = None) -> dict[str, Any]:
    with api.client(key=key) as client:
        response = client.get(f"/v1/batches/{batch_id}", params={"answers": "true"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def summary_on_page(page: Page) -> dict[str, str]:
    names = ["questions", "answered", "cache-hits", "errors", "prompt-tokens",
             "completion-tokens", "wall"]
    return {n: page.locator(f'[data-testid="summary-{n}"]').inner_text() for n in names}


def test_the_page_answers_a_batch_with_sources_citations_and_tokens(api: Api,
                                                                    tab: Tab) -> None:
    page = tab.page
    page.goto(api.url + "/")
    assert page.url == api.url + "/ui/"
    assert page.get_by_label("API key").get_attribute("type") == "password"
    marker = uuid.uuid4().hex[:6]
    questions = [f"What do cells do with glucose? {marker}",
                 f"Does vitamin D help bones? {marker}",
                 f"Is sleep linked to memory? {marker}"]
    run_batch(page, api.key, questions)
    wait_for_summary(page)

    batch_id = page.evaluate("document.body.dataset.batchId")
    batch = batch_from_api(api, batch_id)
    assert batch["status"] == "done" and batch["questions"] == 3
    expected = {a["question_id"]: a for a in batch["answers"]}
    rows = page.eval_on_selector_all('[data-testid="answer-row"]', READ_ROWS)
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert [r["question"] for r in rows] == questions
    for row in rows:
        answer = expected[row["id"]]
        assert answer["error_code"] is None
        assert row["status"] == "answered" and row["error"] is None
        assert row["answer"] == answer["answer"] and row["answer"].startswith("Answer to:")
        assert answer["citations"]
        assert row["citations"] == ", ".join(f"chunk {c}" for c in answer["citations"])
        assert int(row["prompt_tokens"]) == answer["prompt_tokens"] > 0
        assert int(row["completion_tokens"]) == answer["completion_tokens"] > 0
        assert row["cache_hit"] == ("yes" if answer["cache_hit"] else "no")
        assert len(row["sources"]) == len(answer["sources"]) > 0
        for shown, source in zip(row["sources"], answer["sources"], strict=True):
            assert int(shown["chunk_id"]) == source["chunk_id"]
            assert int(shown["document_id"]) == source["document_id"]
            assert float(shown["score"]) == pytest.approx(source["score"])
            assert shown["excerpt"] == source["excerpt"]
            assert f"document {source['document_id']}" in shown["text"]
            assert ("cited" in shown["text"]) == (source["chunk_id"] in answer["citations"])

    summary = batch["summary"]
    on_page = summary_on_page(page)
    assert on_page["questions"] == "3" and on_page["answered"] == str(summary["answered"])
    assert on_page["errors"] == "none"
    assert on_page["prompt-tokens"] == str(summary["prompt_tokens"])
    assert on_page["completion-tokens"] == str(summary["completion_tokens"])
    assert summary["prompt_tokens"] == sum(a["prompt_tokens"] for a in expected.values())
    assert page.get_by_role("alert").is_hidden()
    assert page.locator("#batch-status").inner_text() == f"Batch {batch_id}: done"

    # The key stays in this tab's session storage only (kept across a reload).
    assert page.evaluate("sessionStorage.getItem('rag.apiKey')") == api.key
    assert page.evaluate("localStorage.length") == 0
    screenshot(page, "batch-page.png")
    page.reload()
    assert page.input_value("#api-key") == api.key
    assert tab.outside == []


def test_the_page_shows_a_refused_key_and_a_too_large_batch_as_messages(api: Api,
                                                                        tab: Tab) -> None:
    page = tab.page
    page.goto(api.url + "/ui/")
    run_batch(page, "rag_not_a_key", ["Does vitamin D help bones?"])
    message = alert_text(page)
    assert message.startswith("The API key was not accepted")
    assert page.locator('[data-testid="answer-row"]').count() == 0

    run_batch(page, api.key, [f"question {n}" for n in range(MAX_BATCH + 1)])
    page.wait_for_function(
        "document.getElementById('alert').textContent.startsWith('The request is too large')",
        timeout=WAIT_MS)
    message = alert_text(page)
    # The server's detail names the count and the limit.
    assert str(MAX_BATCH + 1) in message and str(MAX_BATCH) in message
    assert page.locator('[data-testid="answer-row"]').count() == 0
    assert page.locator("#run").is_enabled()
    assert tab.outside == []


def test_the_page_shows_rate_limited_questions_with_their_retry_time(
        api: Api, tab: Tab, make_tenant: Callable[[], TenantId]) -> None:
    # A tenant of its own, so the window holds only this test's questions. It has no
    # documents: the admitted questions fail as no_documents, the rest are rate limited.
    tenant = make_tenant()
    key = api.platform.api_keys.create(tenant, "page rate limit").key
    page = tab.page
    page.goto(api.url + "/ui/")
    count = RATE_LIMIT + 2
    run_batch(page, key, [f"Is coffee good for you? {n}" for n in range(count)])
    wait_for_summary(page)

    batch = batch_from_api(api, page.evaluate("document.body.dataset.batchId"), key=key)
    codes = [a["error_code"] for a in batch["answers"]]
    assert codes[RATE_LIMIT:] == ["rate_limited"] * 2
    assert "rate_limited" not in codes[:RATE_LIMIT]
    rows = page.eval_on_selector_all('[data-testid="answer-row"]', READ_ROWS)
    assert [r["status"] for r in rows] == ["error"] * count
    for row, answer in zip(rows[RATE_LIMIT:], batch["answers"][RATE_LIMIT:], strict=True):
        wait_s = max(1, -(-answer["retry_after_s"] // 1))
        assert row["error"].startswith(f"Rate limited: try again in {int(wait_s)} s")
        assert answer["error"] in row["error"]
    summary = summary_on_page(page)
    errors = json.dumps(batch["summary"]["errors"])
    assert "rate_limited: 2" in summary["errors"], (summary, errors)
    screenshot(page, "batch-page-errors.png")
    assert tab.outside == []


def test_the_api_docs_render_offline(api: Api, tab: Tab) -> None:
    page = tab.page
    page.goto(api.url + "/docs")
    title = page.locator(".swagger-ui .info .title")
    title.wait_for(state="visible", timeout=WAIT_MS)
    assert "rag-platform API" in title.inner_text()
    path = page.locator(".opblock-summary-path", has_text="/v1/batches").first
    path.wait_for(state="visible", timeout=WAIT_MS)
    assert page.locator(".swagger-ui .errors-wrapper").count() == 0
    assert tab.outside == []


PARSE_SPLIT_STREAM = r"""() => {
  const events = [];
  const feed = window.ragBatchPage.sseParser((e) => events.push(e));
  // Chunk borders fall inside a CRLF, inside a field and between two data lines.
  for (const chunk of [": ping\r", "\nid: 1\r", "\nevent: answer\ndata: {\"a\":",
                       "\ndata: 1}\r\n\r\n", ": ping\n\n", "id: 2\nevent: summary\n",
                       "data: {}\n", "\n", "id: 3\ndata: cut short"]) {
    feed(chunk);
  }
  return events;
}"""

WORD_PROBLEMS = """() => {
  const m = window.ragBatchPage.problemMessage;
  return [
    m(503, {code: "circuit_open", detail: "the LLM breaker is open",
            retry_after_s: 12.2}, "13"),
    m(429, {code: "rate_limited", detail: "over the limit", retry_after_s: 2.5}, "3"),
    m(401, {code: "unauthorized", detail: "the API key is not valid"}, null),
    m(422, {code: "invalid_input", field: "questions.0.id",
            detail: "questions.0.id: String should match pattern"}, null),
    m(503, null, "7"),
    m(502, null, null),
  ];
}"""


def test_the_page_parses_split_events_and_words_each_problem(api: Api, tab: Tab) -> None:
    page = tab.page
    page.goto(api.url + "/ui/")
    events = page.evaluate(PARSE_SPLIT_STREAM)
    # Pings are comments, not events; an event without its blank line is not complete.
    assert events == [{"id": "1", "event": "answer", "data": '{"a":\n1}'},
                      {"id": "2", "event": "summary", "data": "{}"}]
    assert json.loads(events[0]["data"]) == {"a": 1}
    messages = page.evaluate(WORD_PROBLEMS)
    assert messages == [
        "The language model is paused after repeated failures; retry in 13 s — "
        "the LLM breaker is open",
        "Rate limited: try again in 3 s — over the limit",
        "The API key was not accepted — the API key is not valid",
        "The request is not valid — field questions.0.id — questions.0.id: String should "
        "match pattern",
        "The service is unavailable: try again in 7 s",
        "The request failed (HTTP 502)",
    ]
    assert tab.outside == []
