"""Where the caches and the controls live: one decision, used by the platform and ``rag doctor``.

* Caches (answers, query embeddings): ``REDIS_URL``, else the embedded cache server.
* Controls (rate limits, token quota, breaker, LLM slots): ``RAG_REDIS_CONTROL_URL``; else,
  with ``REDIS_URL``, that server's database ``redis_control_db``; else the embedded control
  server (``noeviction``).

The controls never share a logical database with the caches: a purge or a ``FLUSHDB`` of the
caches must not reset a quota, and a doctor check must be able to tell them apart.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rag_core.config import Settings
from rag_core.errors import ConfigurationError
from rag_core.redis.embedded import EmbeddedRedis


def url_database(url: str) -> int:
    """The logical database a Redis URL selects (path ``/N`` or ``?db=N``; default 0)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    text = query.get("db") or parts.path.strip("/") or "0"
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError("REDIS_URL", _redact(url),
                                 f"database {text!r} is not a number") from None


def with_database(url: str, database: int) -> str:
    """``url`` with its logical database replaced by ``database``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"]
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", urlencode(query),
                       parts.fragment))


def cache_url(settings: Settings) -> str:
    """The caches' Redis."""
    if settings.redis_url is not None:
        return settings.redis_url
    return EmbeddedRedis(settings.state_dir).url()


def control_url(settings: Settings, cache: str | None = None) -> str:
    """The controls' Redis; ``cache`` is the caches' URL when a caller chose it."""
    if settings.redis_control_url is not None:
        return settings.redis_control_url
    shared = cache if cache is not None else settings.redis_url
    if shared is None:
        return EmbeddedRedis(settings.state_dir).control_url()
    if url_database(shared) == settings.redis_control_db:
        raise ConfigurationError(
            "RAG_REDIS_CONTROL_DB", settings.redis_control_db,
            f"is the caches' database in REDIS_URL ({_redact(shared)}): choose another "
            "database, or a control server with RAG_REDIS_CONTROL_URL")
    return with_database(shared, settings.redis_control_db)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
