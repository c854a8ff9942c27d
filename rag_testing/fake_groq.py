"""A fake Groq API: a real HTTP server on 127.0.0.1 that the real ``groq`` client talks to.

Used by the test suite and by ``rag bench query`` (a fixed-latency LLM, so the benchmark
measures the platform, not a provider).

The LLM is the only component the test suite fakes, and only at the HTTP boundary: the SDK's
request building, response parsing, timeouts and error mapping all run for real. Point a
client at :attr:`FakeGroqServer.base_url`; the SDK posts to ``/openai/v1/chat/completions``.

Scripting: :meth:`FakeGroqServer.enqueue` queues responses (or responder functions) that
are served in order, one per request; when the queue is empty the *default responder*
answers (:func:`echo_responder` unless another is given). Helpers build the usual cases:
:func:`chat_completion`, :func:`error_response` / :func:`rate_limited` (with
``Retry-After``), :func:`slow` (a delay longer than a client timeout), :func:`held` (blocks
until a test releases an event), :func:`malformed_body` and :func:`invalid_json_content`.

Observation: every request is recorded with its parsed JSON body and a server-side
``time.monotonic()`` timestamp, and the server tracks the *maximum* number of requests in
flight at once, so a test can prove a concurrency cap. Delays and holds end when the server
stops, so a test never hangs on a forgotten event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "CHAT_PATH",
    "FakeGroqServer",
    "FakeResponse",
    "RecordedRequest",
    "Responder",
    "answering_after",
    "answering_responder",
    "chat_completion",
    "echo_responder",
    "error_response",
    "held",
    "invalid_json_content",
    "malformed_body",
    "rate_limited",
    "slow",
]

CHAT_PATH = "/openai/v1/chat/completions"
DEFAULT_MODEL = "llama-3.1-8b-instant"


@dataclass(frozen=True)
class FakeResponse:
    """One scripted HTTP response.

    ``delay_s`` waits before answering (a client with a shorter timeout gives up first);
    ``hold`` waits until the event is set. Both end early when the server stops.
    """

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0
    hold: threading.Event | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it."""

    index: int
    method: str
    path: str
    headers: Mapping[str, str]
    raw_body: bytes
    body: Any
    received_at: float  # time.monotonic() in the server thread

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of the request (empty when the body had none)."""
        if isinstance(self.body, dict):
            return list(self.body.get("messages") or [])
        return []

    @property
    def response_format(self) -> Any:
        """The ``response_format`` field, ``None`` when absent."""
        return self.body.get("response_format") if isinstance(self.body, dict) else None

    @property
    def max_tokens(self) -> int | None:
        """``max_completion_tokens`` (or the deprecated ``max_tokens``) of the request."""
        if not isinstance(self.body, dict):
            return None
        value = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        return int(value) if value is not None else None


Responder = Callable[[RecordedRequest], FakeResponse]


# --- response builders ---------------------------------------------------------------------
def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None,
                   ) -> FakeResponse:
    return FakeResponse(status=status, body=json.dumps(payload).encode(),
                        headers=dict(headers or {}))


def chat_completion(content: str, *, prompt_tokens: int = 10, completion_tokens: int = 5,
                    model: str = DEFAULT_MODEL, finish_reason: str = "stop",
                    headers: Mapping[str, str] | None = None) -> FakeResponse:
    """A normal OpenAI-style chat completion with ``usage``."""
    payload = {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "system_fingerprint": "fp_fake",
        "x_groq": {"id": "req_fake"},
    }
    return _json_response(200, payload, headers)


def error_response(status: int, message: str = "", *, retry_after: float | str | None = None,
                   headers: Mapping[str, str] | None = None) -> FakeResponse:
    """A Groq-style error body with ``status``; ``retry_after`` sets the header."""
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    payload = {"error": {"message": message or f"fake error {status}",
                         "type": "rate_limit_error" if status == 429 else "api_error",
                         "code": str(status)}}
    return _json_response(status, payload, all_headers)


def rate_limited(retry_after: float | str | None = 1) -> FakeResponse:
    """A 429 with a ``Retry-After`` header (seconds form by default)."""
    return error_response(429, "Rate limit reached", retry_after=retry_after)


def slow(response: FakeResponse, delay_s: float) -> FakeResponse:
    """``response`` sent only after ``delay_s`` seconds."""
    return dataclasses.replace(response, delay_s=delay_s)


def held(response: FakeResponse, event: threading.Event) -> FakeResponse:
    """``response`` sent only once ``event`` is set (or the server stops)."""
    return dataclasses.replace(response, hold=event)


def malformed_body() -> FakeResponse:
    """A 200 whose JSON body is cut off: the envelope itself is broken."""
    return FakeResponse(status=200, body=b'{"id": "chatcmpl-broken", "choices": [{"index": 0,')


def invalid_json_content(content: str = '{"answers": [{"id": 1, "text": "cut sho') -> FakeResponse:
    """A valid envelope whose message content is partial (invalid) JSON."""
    return chat_completion(content, finish_reason="length")


def echo_responder(request: RecordedRequest) -> FakeResponse:
    """Default responder: echoes the last user message, with word-count token usage.

    In JSON mode the content is ``{"echo": <last user message>}``, so JSON-mode callers get
    valid output without scripting.
    """
    messages = request.messages
    last_user = next((str(m.get("content", "")) for m in reversed(messages)
                      if m.get("role") == "user"), "")
    fmt = request.response_format
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        content = json.dumps({"echo": last_user})
    else:
        content = f"echo: {last_user}"
    model = request.body.get("model", DEFAULT_MODEL) if isinstance(request.body, dict) else ""
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    return chat_completion(content, prompt_tokens=prompt_tokens,
                           completion_tokens=len(content.split()), model=str(model))


def answering_responder(request: RecordedRequest) -> FakeResponse:
    """Answers every question of a batch prompt (``rag_core.llm.prompts`` layout), citing
    each question's first passage; usage is ~4 characters a token, as a provider reports."""
    user = next((str(m.get("content", "")) for m in request.messages
                 if m.get("role") == "user"), "{}")
    try:
        questions = json.loads(user).get("questions", [])
    except (json.JSONDecodeError, AttributeError):
        questions = []
    answers = [{"id": q["id"], "answer": f"Answer to: {str(q.get('question', ''))[:60]}",
                "citations": [q["passages"][0]["chunk_id"]] if q.get("passages") else []}
               for q in questions]
    content = json.dumps({"answers": answers})
    prompt_chars = sum(len(str(m.get("content", ""))) for m in request.messages)
    return chat_completion(content, prompt_tokens=max(1, prompt_chars // 4),
                           completion_tokens=max(1, len(content) // 4))


def answering_after(delay_s: float) -> Responder:
    """:func:`answering_responder` whose every reply takes ``delay_s`` seconds: a provider
    of fixed latency (benchmarks; a batch slow enough to be interrupted)."""

    def responder(request: RecordedRequest) -> FakeResponse:
        return slow(answering_responder(request), delay_s)

    return responder


# --- the server ----------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self.server.fake.handle(self)

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGroqServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out and hang up are expected here; do not print tracebacks."""


class FakeGroqServer:
    """A scripted chat-completions server on a random free loopback port.

    Use as a context manager (or :meth:`start` / :meth:`stop`). Thread-safe: tests may call
    :meth:`enqueue` while requests are being served.
    """

    def __init__(self, default: Responder | None = None) -> None:
        self._default: Responder = default or echo_responder
        self._queue: deque[FakeResponse | Responder] = deque()
        self._requests: list[RecordedRequest] = []
        self._cond = threading.Condition()
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeGroqServer:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-groq", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held/delayed responses, stop serving and close the socket."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGroqServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as ``groq.Groq(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    # --- scripting -------------------------------------------------------------------------
    def enqueue(self, *responses: FakeResponse | Responder) -> None:
        """Queue responses (or responder functions) served in order, one per request."""
        with self._cond:
            self._queue.extend(responses)

    def set_default(self, responder: Responder) -> None:
        """Answer with ``responder`` once the queue is empty."""
        with self._cond:
            self._default = responder

    @property
    def queued(self) -> int:
        """Scripted responses not yet served."""
        with self._cond:
            return len(self._queue)

    # --- observation -----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests arrived."""
        with self._cond:
            return len(self._requests)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now."""
        with self._cond:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests ever handled at the same time."""
        with self._cond:
            return self._max_in_flight

    def reset_stats(self) -> None:
        """Forget recorded requests and the in-flight maximum (the queue is kept)."""
        with self._cond:
            self._requests.clear()
            self._max_in_flight = self._in_flight

    def wait_for(self, predicate: Callable[[FakeGroqServer], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every request change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # --- serving ---------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Serve one request (called in the server's handler thread)."""
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._cond:
            request = RecordedRequest(
                index=len(self._requests), method=handler.command, path=handler.path,
                headers={k.lower(): v for k, v in handler.headers.items()}, raw_body=raw,
                body=body, received_at=time.monotonic())
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            scripted = self._queue.popleft() if self._queue else None
            default = self._default
            self._cond.notify_all()
        try:
            if handler.path.split("?")[0] != CHAT_PATH:
                response = error_response(404, f"unknown path {handler.path}")
            elif scripted is None:
                response = default(request)
            elif isinstance(scripted, FakeResponse):
                response = scripted
            else:
                response = scripted(request)
            self._wait(response)
            self._write(handler, response)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _wait(self, response: FakeResponse) -> None:
        if response.delay_s > 0:
            self._stopping.wait(response.delay_s)
        if response.hold is not None:
            while not response.hold.wait(0.02) and not self._stopping.is_set():
                pass

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, response: FakeResponse) -> None:
        # A client that timed out has hung up; writing to it fails, which is expected.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(response.body)
            handler.wfile.flush()
