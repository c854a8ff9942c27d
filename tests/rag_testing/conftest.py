"""The fake Groq server is exercised with the LLM tests' own fixtures (one definition)."""

from tests.llm.conftest import (  # noqa: F401  (pytest finds fixtures by name here)
    breaker_name,
    breaker_redis,
    clock,
    fake_groq,
    make_breaker,
    make_client,
    sleeper,
)
