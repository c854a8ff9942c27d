"""The LLM judge of ``rag eval answers``: an OpenAI-compatible endpoint behind a rate limit.

ragas' LLM-judged metrics (faithfulness, answer relevancy) send several requests per claim.
A provider's rate limit answers a burst with 429s; a judge call that gives up then fails
its metric for that claim, and averaging over the claims that happened to get through would
skew the score towards whatever was asked first. So every judge request goes through
:class:`RateLimitedTransport`, an httpx transport under the OpenAI SDK:

* at most ``requests_per_minute`` request starts per minute (evenly spaced: a 429 is
  avoided rather than retried) and at most ``max_concurrency`` requests in flight;
* a 429, a 5xx, a timeout or a lost connection is retried by tenacity under the judge's
  :class:`~rag_core.config.RetryPolicy`, waiting the ``Retry-After`` seconds when the
  server sends them (capped), exponential backoff with jitter otherwise (the product's own
  LLM client's rules, :mod:`rag_core.llm.client`);
* the SDK itself is built with ``max_retries=0``: one retry layer, whose attempts are
  counted (:class:`JudgeStats`), so a run says how many calls were retried and how many
  failed for good — a metric with failed calls is reported as failed, never as a low score.

The spacing is hand-written (a lock and the next free start time) because no async rate
limiter is among the project's dependencies and the rule is three lines; retries are
tenacity's.

The endpoint is ragas' OpenAI-compatible path: ``llm_factory(model, client=AsyncOpenAI(
base_url=...))`` (its ``provider="groq"`` path is broken in ragas 0.4.3). Answer relevancy
compares questions by embeddings: :class:`PlatformEmbeddings` lends it the platform's own
local embedder, so no embedding request leaves the machine.

Configuration: ``RAG_EVAL__JUDGE_BASE_URL`` (e.g. ``https://api.groq.com/openai/v1``),
``RAG_EVAL__JUDGE_MODEL``, ``RAG_EVAL__JUDGE_API_KEY``, ``RAG_EVAL__JUDGE_REQUESTS_PER_MINUTE``,
``RAG_EVAL__JUDGE_MAX_CONCURRENCY``, ``RAG_EVAL__JUDGE_RETRY__ATTEMPTS`` … (or the
``--judge-*`` options of ``rag eval answers``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from ragas.embeddings.base import BaseRagasEmbedding
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
)

from rag_core.config import RetryPolicy
from rag_core.embeddings.base import Embedder
from rag_core.llm.client import parse_retry_after

__all__ = ["JudgeSettings", "JudgeStats", "PlatformEmbeddings", "RateLimitedTransport",
           "judge_llm"]

Sleep = Callable[[float], Awaitable[None]]


class JudgeSettings(BaseSettings):
    """Where the judge is and how hard it may be pushed (``RAG_EVAL__JUDGE_*``)."""

    model_config = SettingsConfigDict(env_prefix="RAG_EVAL__JUDGE_", extra="ignore",
                                      frozen=True, env_nested_delimiter="__")

    base_url: str | None = Field(default=None, description="OpenAI-compatible API base URL "
                                                           "(…/v1); unset = no judge")
    model: str | None = Field(default=None, min_length=1)
    api_key: SecretStr | None = Field(default=None, description="unset: a placeholder (a "
                                                                "local server needs none)")
    requests_per_minute: int = Field(default=30, ge=1, le=100_000)
    max_concurrency: int = Field(default=2, ge=1, le=64)
    timeout_s: float = Field(default=60.0, gt=0)
    # answer relevancy asks for this many questions per answer (one request each)
    answer_relevancy_strictness: int = Field(default=3, ge=1, le=10)
    retry: RetryPolicy = RetryPolicy(attempts=5, initial_backoff_s=1.0, max_backoff_s=30.0,
                                     max_retry_after_s=60.0)

    @property
    def configured(self) -> bool:
        return self.base_url is not None


@dataclass
class JudgeStats:
    """What the judge's requests went through (one ``call`` is one SDK request)."""

    calls: int = 0
    attempts: int = 0
    retried: int = 0  # attempts after a call's first
    rate_limited: int = 0  # 429 answers seen (retried or not)
    failed: int = 0  # calls whose last attempt still failed (error status or no answer)
    retry_wait_s: float = 0.0  # slept before retries (Retry-After or backoff)
    throttle_wait_s: float = 0.0  # slept to stay under requests_per_minute
    retry_waits: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["retry_wait_s"] = round(self.retry_wait_s, 3)
        data["throttle_wait_s"] = round(self.throttle_wait_s, 3)
        data["retry_waits"] = [round(w, 3) for w in self.retry_waits]
        return data


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """Spacing, a concurrency cap and retries (see the module docstring) around ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, requests_per_minute: int,
                 max_concurrency: int, retry: RetryPolicy, stats: JudgeStats,
                 sleep: Sleep = asyncio.sleep, rng: random.Random | None = None) -> None:
        self._inner = inner
        self._interval_s = 60.0 / requests_per_minute
        self._next_start = 0.0
        self._spacing = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(max_concurrency)
        self._retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.stats = stats

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.stats.calls += 1
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts),
            retry=retry_if_result(_retryable) | retry_if_exception_type(httpx.TransportError),
            wait=self._wait_s, sleep=self._sleep_before_retry, reraise=True)
        try:
            response: httpx.Response = await retrying(self._attempt, request)
        except httpx.TransportError:
            self.stats.failed += 1
            raise
        if response.status_code >= 400:  # retries exhausted, or refused outright
            self.stats.failed += 1
        return response

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        await self._take_turn()
        async with self._in_flight:
            self.stats.attempts += 1
            response = await self._inner.handle_async_request(request)
        if response.status_code == 429:
            self.stats.rate_limited += 1
        if _retryable(response):
            await response.aread()  # the headers stay readable; the connection is freed
        return response

    async def _take_turn(self) -> None:
        async with self._spacing:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self._interval_s
        if start > now:
            self.stats.throttle_wait_s += start - now
            await self._sleep(start - now)

    def _wait_s(self, state: RetryCallState) -> float:
        policy = self._retry
        outcome = state.outcome
        response = outcome.result() if outcome is not None and not outcome.failed else None
        if policy.honour_retry_after and isinstance(response, httpx.Response):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                return min(retry_after, policy.max_retry_after_s)
        exponent = state.attempt_number - 1
        base = min(policy.max_backoff_s, policy.initial_backoff_s * 2.0 ** min(exponent, 60))
        return self._rng.uniform(base / 2, base) if policy.jitter else base

    async def _sleep_before_retry(self, seconds: float) -> None:
        self.stats.retried += 1
        self.stats.retry_wait_s += seconds
        self.stats.retry_waits.append(seconds)
        await self._sleep(seconds)

    async def aclose(self) -> None:
        await self._inner.aclose()


def judge_llm(settings: JudgeSettings, stats: JudgeStats, *,
              sleep: Sleep = asyncio.sleep) -> tuple[Any, httpx.AsyncClient]:
    """ragas' instructor LLM for ``settings``' endpoint, and the HTTP client to close.
    Build it inside the event loop that will use it (the limiter's locks belong to it)."""
    from openai import AsyncOpenAI
    from ragas.llms import llm_factory

    if settings.base_url is None or settings.model is None:
        raise ValueError("the judge needs a base URL and a model")
    transport = RateLimitedTransport(
        httpx.AsyncHTTPTransport(), requests_per_minute=settings.requests_per_minute,
        max_concurrency=settings.max_concurrency, retry=settings.retry, stats=stats,
        sleep=sleep)
    http = httpx.AsyncClient(transport=transport, timeout=settings.timeout_s)
    key = settings.api_key.get_secret_value() if settings.api_key is not None else "none"
    # openai 3 is typed for its own httpx2 clients and takes httpx ones as well
    client = AsyncOpenAI(base_url=settings.base_url, api_key=key, max_retries=0,
                         http_client=cast(Any, http), timeout=settings.timeout_s)
    return llm_factory(settings.model, client=client), http


class PlatformEmbeddings(BaseRagasEmbedding):
    """The platform's local embedder in ragas' embeddings interface (answer relevancy
    compares the claim with questions generated from the answer: both are queries)."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self._embedder = embedder

    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        return [float(x) for x in self._embedder.embed_queries([text])[0]]

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(self.embed_text, text)

    def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return [[float(x) for x in row] for row in self._embedder.embed_queries(texts)]

    async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_texts, texts)
