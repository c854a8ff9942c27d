"""Fixtures of the limit tests: a clock the test moves, and the query fixtures (a tenant with
a real corpus, the fake LLM) for the outage tests that run whole questions."""

from __future__ import annotations

from tests.query.conftest import corpus_tenant, fake_llm  # noqa: F401  (fixtures)


class FakeClock:
    """Monotonic seconds that only move when the test says so (no timed tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
