"""The bench's service and what it is asked outside wrk: the child's environment, the
warm-up, the service's own count of the queries it answered, and the audit rows written.

The service is ``rag serve`` on 127.0.0.1 over the bench's own settings (the same database
and Redis), with a Redis key prefix of its own (nothing cached by an earlier run), an audit
spool of its own, the fake LLM, and limits far above what the bench sends: it measures the
service, not the tenant's rate limit.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from rag_core.common.offline import offline_environment
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.errors import BenchmarkError

__all__ = ["audit_rows", "queries_served", "service_environment", "wait_for_audit",
           "wait_until_served_settles", "warm_up"]

QUERY_ROUTE = "/v1/query"
_AUDIT_ROWS = "SELECT count(*) FROM rag.audit_log WHERE tenant_id = %s AND kind = 'query'"


def service_environment(settings: Settings, *, llm_base_url: str, key_prefix: str,
                        spool_dir: Path) -> dict[str, str]:
    """This process's environment for the child, pointed at the same servers, plus the
    bench's own settings (explicit variables beat whatever the caller's shell has)."""
    env = offline_environment()
    env.update({
        "RAG_STATE_DIR": str(settings.state_dir),
        "RAG_EMBEDDED_DATABASE": settings.embedded_database,
        "RAG_REDIS_KEY_PREFIX": key_prefix,
        "RAG_AUDIT_SPOOL_DIR": str(spool_dir),
        "RAG_LLM_API_KEY": "load-bench", "RAG_LLM_BASE_URL": llm_base_url,
        "RAG_RATE_LIMIT__REQUESTS_PER_MINUTE": str(10**9),
        "RAG_RATE_LIMIT__TOKENS_PER_DAY": str(10**15),
    })
    return env


def _ask(client: httpx.Client, question: str) -> tuple[bool, bool]:
    """(answered with 200, served from the cache)."""
    response = client.post(QUERY_ROUTE, json={"question": question})
    if response.status_code != 200:
        return False, False
    return True, bool(response.json().get("cache_hit"))


def warm_up(url: str, key: str, questions: list[str], *, concurrency: int) -> \
        tuple[int, int]:
    """Answer each question once (filling the answer cache), then once more to check it
    is served cached; (requests sent, requests that failed or missed the cache the 2nd
    time)."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60,
                      limits=httpx.Limits(max_connections=concurrency)) as client, \
            ThreadPoolExecutor(max_workers=concurrency) as pool:
        first = list(pool.map(lambda q: _ask(client, q), questions))
        second = list(pool.map(lambda q: _ask(client, q), questions))
    failed = sum(not ok for ok, _ in first) + sum(not (ok and hit) for ok, hit in second)
    return len(first) + len(second), failed


def queries_served(url: str) -> int:
    """``POST /v1/query`` responses the service sent, any status, summed over workers
    (its own counter: it includes requests whose client had stopped listening)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "rag_http_requests_total"
                    and sample.labels.get("route") == QUERY_ROUTE
                    and sample.labels.get("method") == "POST"):
                total += sample.value
    return int(total)


def wait_until_served_settles(url: str, *, timeout_s: float = 60.0) -> int:
    """The served count once three reads 0.2 s apart agree (requests wrk abandoned when
    its time was up finish within their own latency)."""
    deadline = time.monotonic() + timeout_s
    readings = [queries_served(url)]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        readings.append(queries_served(url))
        if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
            return readings[-1]
    raise BenchmarkError(f"the service's query count kept changing for {timeout_s} s "
                         f"after the load stopped (last readings {readings[-3:]})",
                         value=readings[-3:])


def audit_rows(settings: Settings, tenant: TenantId) -> int:
    """The tenant's ``query`` audit rows (read as the admin: every worker's writes)."""
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        row = conn.execute(_AUDIT_ROWS, [tenant]).fetchone()
    return int(row[0]) if row else 0


def wait_for_audit(settings: Settings, tenant: TenantId, expected: int, *,
                   timeout_s: float = 60.0) -> int:
    """The tenant's audit rows once the buffered writers delivered ``expected`` of them, or
    once the count stopped moving for 3 s (then it is short: the report says so)."""
    deadline = time.monotonic() + timeout_s
    count, changed_at = audit_rows(settings, tenant), time.monotonic()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        latest = audit_rows(settings, tenant)
        if latest != count:
            count, changed_at = latest, time.monotonic()
        elif time.monotonic() - changed_at > 3.0:
            break
    return count
