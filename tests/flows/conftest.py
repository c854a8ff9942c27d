"""The flows' per-process platform pointed at the test database (the session's Prefect test
harness, ``prefect_harness``, is in tests/conftest.py: the pooler's flow test uses it too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flows import _resources
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder


@pytest.fixture()
def flow_platform(settings: Settings, db: Database, embedder: Embedder,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The flows' per-process platform, pointed at the test database and the session's
    pool and model (closed, and forgotten, after the test)."""
    platform = Platform(settings, database=db, embedder=embedder, start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)
    yield platform
    platform.close()
