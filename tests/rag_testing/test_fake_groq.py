"""The fake Groq server itself: what later tests (batching, concurrency caps) rely on."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import groq
import pytest

from rag_core.llm import ChatMessage
from rag_testing.fake_groq import FakeGroqServer, chat_completion, held
from tests.llm.conftest import MakeClient

USER: list[ChatMessage] = [{"role": "user", "content": "one two three"}]


def test_default_responder_echoes_with_word_count_usage(fake_groq: FakeGroqServer,
                                                        make_client: MakeClient) -> None:
    client = make_client()
    plain = client.complete(USER)
    as_json = client.complete(USER, response_format_json=True)

    assert plain.text == "echo: one two three"
    assert (plain.prompt_tokens, plain.completion_tokens) == (3, 4)
    assert json.loads(as_json.text) == {"echo": "one two three"}


def test_scripted_queue_then_default(fake_groq: FakeGroqServer, make_client: MakeClient) -> None:
    fake_groq.enqueue(chat_completion("first"),
                      lambda request: chat_completion(f"saw {len(request.messages)} msg"))
    client = make_client()
    assert [client.complete(USER).text for _ in range(3)] == [
        "first", "saw 1 msg", "echo: one two three"]
    assert fake_groq.queued == 0
    assert [r.index for r in fake_groq.requests] == [0, 1, 2]


def test_unknown_path_is_404(fake_groq: FakeGroqServer) -> None:
    with groq.Groq(api_key="k", base_url=f"{fake_groq.base_url}/elsewhere",
                   max_retries=0) as sdk, pytest.raises(groq.NotFoundError):
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_max_in_flight_counts_concurrent_requests(fake_groq: FakeGroqServer,
                                                  make_client: MakeClient) -> None:
    release = threading.Event()
    fake_groq.set_default(lambda request: held(chat_completion("done"), release))
    client = make_client()

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(client.complete, USER) for _ in range(4)]
        assert fake_groq.wait_for(lambda f: f.in_flight == 4)
        release.set()
        assert [f.result(timeout=10).text for f in futures] == ["done"] * 4

    assert fake_groq.max_in_flight == 4
    assert fake_groq.in_flight == 0
    fake_groq.reset_stats()
    assert (fake_groq.request_count, fake_groq.max_in_flight) == (0, 0)


def test_stop_releases_held_requests() -> None:
    never = threading.Event()
    server = FakeGroqServer().start()
    server.enqueue(held(chat_completion("x"), never))
    sdk = groq.Groq(api_key="k", base_url=server.base_url, max_retries=0, timeout=10)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(lambda: sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]))
            assert server.wait_for(lambda f: f.in_flight == 1)
            server.stop()
            assert future.result(timeout=10).choices[0].message.content == "x"
    finally:
        sdk.close()
