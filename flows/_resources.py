"""Per-process resources shared by the tasks of a flow run: the database pool is opened once
per worker process (the embedding model is cached per process by its registry)."""

from __future__ import annotations

import threading

from rag_core import services
from rag_core.config import Settings, get_settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.factory import embedder_from

_lock = threading.Lock()
_database: Database | None = None


def settings() -> Settings:
    return get_settings()


def database() -> Database:
    global _database
    with _lock:
        if _database is None:
            services.start_services(settings())  # a no-op for external servers
            _database = services.open_database(settings())
        return _database


def embedder() -> Embedder:
    return embedder_from(settings())
