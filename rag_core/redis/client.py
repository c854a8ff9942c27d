"""Redis clients that fail fast.

redis-py's defaults retry a refused connection ten times with backoff (seconds per call);
every Redis use in this platform is an optimisation or a shared counter that must degrade
in milliseconds when Redis is down (the answer cache is bypassed, the breaker lets calls
through), so clients get tight timeouts and no client-side retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from rag_core.config import Settings


def fail_fast_redis(url: str, *, socket_timeout_s: float = 0.25,
                    connect_timeout_s: float = 0.25) -> redis.Redis:
    """A client with tight timeouts and no redis-py retries."""
    return redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                socket_connect_timeout=connect_timeout_s,
                                retry=Retry(NoBackoff(), 0))


def redis_from_settings(settings: Settings, url: str) -> redis.Redis:
    return fail_fast_redis(url, socket_timeout_s=settings.redis_socket_timeout_s,
                           connect_timeout_s=settings.redis_connect_timeout_s)
