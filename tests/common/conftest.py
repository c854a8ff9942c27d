"""Fixtures of the metrics and tracing tests: the query path's (a tenant with a real corpus,
the fake LLM, services built as the product builds them) and the breaker's (a clock the
test moves, breakers on the test Redis)."""

from __future__ import annotations

from tests.llm.conftest import (  # noqa: F401  (pytest finds fixtures by name here)
    breaker_name,
    breaker_redis,
    clock,
    make_breaker,
)
from tests.query.conftest import corpus_tenant, fake_llm, make_service  # noqa: F401
