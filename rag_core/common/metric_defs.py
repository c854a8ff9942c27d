"""Every Prometheus metric of the platform's own code paths, in one registry.

Labels hold bounded, enum-like values only: a stage name, a route *template*, an error code,
a configured breaker name. Never a tenant id, a question, a key or a path with an id in it:
each distinct label value is a time series kept forever by the server, and a label is
readable by anyone who can read the dashboards.

Several worker processes (uvicorn ``--workers``, Prefect workers) each count on their own;
with ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client keeps every value in a per-process
file and :func:`rag_core.common.metrics.render_metrics` adds them up. Counters and
histograms sum; a gauge sums or keeps one value according to its ``multiprocess_mode``,
which every gauge here sets on purpose (the default, ``all``, would add a ``pid`` label).

Import these through :mod:`rag_core.common.metrics` (which also renders them).
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "AUDIT_SPOOL_QUARANTINED", "BREAKER_OPEN_SECONDS", "BREAKER_STATE", "CACHE_LOOKUPS",
    "CONCURRENCY_WAITS", "CONCURRENCY_WAIT_SECONDS", "CROSS_TENANT_ROWS_BLOCKED",
    "HTTP_REQUESTS", "HTTP_REQUESTS_IN_FLIGHT", "HTTP_REQUEST_SECONDS", "LIMIT_REJECTIONS",
    "LLM_CALLS", "LLM_CALL_SECONDS", "LLM_RETRIES", "LLM_TOKENS", "QUESTIONS",
    "QUOTA_USAGE_FRACTION", "REGISTRY", "RLS_OVERHEAD_SECONDS", "RLS_SAMPLES", "STAGE_SECONDS",
    "Stage",
]

REGISTRY = CollectorRegistry(auto_describe=True)

# Latencies from a cached answer (well under a millisecond a stage) to a slow LLM call. 3 s
# is the p95 alert's threshold (deploy/prometheus/alerts.yml): as a bucket bound, "p95 above
# 3 s" is exact instead of an interpolation between 2.5 and 5.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 3.0, 5.0, 10.0, 30.0)
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)


class Stage(StrEnum):
    """The stages of the query path: the only values of ``rag_stage_seconds{stage}`` and
    the names of their spans."""

    REDACT = "redact"  # PII redaction of the question
    RATE_LIMIT = "rate_limit"
    TENANT_STATE = "tenant_state"  # corpus version and cache epoch
    CACHE = "cache"  # the answer cache (get and put)
    EMBED = "embed"  # the question's vector (query-embedding cache included)
    RETRIEVE = "retrieve"  # the vector search
    REDACT_PASSAGES = "redact_passages"
    QUOTA = "quota"  # token reservation and settlement
    LLM = "llm"  # every LLM call of the request, concurrency waits included
    AUDIT = "audit"


# --- HTTP (counted by the API's middleware) ------------------------------------------------
HTTP_REQUESTS = Counter(
    "rag_http_requests", "HTTP requests by route template, method and status code.",
    ["route", "method", "status"], registry=REGISTRY)
HTTP_REQUEST_SECONDS = Histogram(
    "rag_http_request_seconds", "HTTP request duration by route template.", ["route"],
    buckets=_FAST_BUCKETS, registry=REGISTRY)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "rag_http_requests_in_flight", "HTTP requests being served (summed over live workers).",
    multiprocess_mode="livesum", registry=REGISTRY)

# --- the query path ------------------------------------------------------------------------
STAGE_SECONDS = Histogram(
    "rag_stage_seconds", "Duration of one stage of the query path.", ["stage"],
    buckets=_FAST_BUCKETS, registry=REGISTRY)
QUESTIONS = Counter(
    "rag_questions", "Questions answered by the query service, by outcome (ok or the error "
    "code).", ["outcome"], registry=REGISTRY)
CACHE_LOOKUPS = Counter("rag_cache_lookups", "Cache lookups by outcome.", ["cache", "outcome"],
                        registry=REGISTRY)
CROSS_TENANT_ROWS_BLOCKED = Counter(
    "rag_cross_tenant_rows_blocked",
    "Rows of another tenant that reached the application and were refused (must stay 0).",
    registry=REGISTRY,
)
# Audit spool: a line that cannot be read back (a process killed mid-write, a damaged file)
# is set aside, not replayed and not dropped; any increase deserves a look.
AUDIT_SPOOL_QUARANTINED = Counter(
    "rag_audit_spool_quarantined",
    "Spooled audit lines moved to the quarantine folder instead of the database.",
    registry=REGISTRY,
)

# --- the LLM -------------------------------------------------------------------------------
LLM_CALLS = Counter(
    "rag_llm_calls", "LLM calls by outcome (ok, circuit_open, llm_unavailable, "
    "request_rejected, bad_response, llm_error).", ["outcome"], registry=REGISTRY)
LLM_TOKENS = Counter(
    "rag_llm_tokens", "Tokens of successful LLM calls (kind=prompt|completion).", ["kind"],
    registry=REGISTRY)
LLM_RETRIES = Counter(
    "rag_llm_retries", "HTTP attempts of LLM calls after their first one.", registry=REGISTRY)
LLM_CALL_SECONDS = Histogram(
    "rag_llm_call_seconds", "Duration of one LLM call, retries and backoff included.",
    buckets=_SLOW_BUCKETS, registry=REGISTRY)
# The breaker lives in Redis and every worker sees the same one: the most recent reading of
# any live worker is the state (the mean or the sum of workers' readings would mean nothing).
BREAKER_STATE = Gauge(
    "rag_breaker_state", "Circuit breaker state last seen (0 closed, 1 half-open, 2 open).",
    ["breaker"], multiprocess_mode="livemostrecent", registry=REGISTRY)
# Counted once per open period, by the one process whose probe ended it (closed again or
# re-opened), so the sum over workers is the breaker's time open; a period still running
# is not in it yet (rag_breaker_state shows it).
BREAKER_OPEN_SECONDS = Counter(
    "rag_breaker_open_seconds", "Seconds the circuit breaker spent open (and half-open) "
    "before a probe decided, counted when the period ends.", ["breaker"], registry=REGISTRY)

# --- limits --------------------------------------------------------------------------------
LIMIT_REJECTIONS = Counter(
    "rag_limit_rejections", "Questions refused by a limit (limit=rate|quota) and why (the "
    "error code: rate_limited, limits_unavailable, quota_exceeded, quota_unavailable).",
    ["limit", "reason"], registry=REGISTRY)
CONCURRENCY_WAITS = Counter(
    "rag_concurrency_waits", "Slot acquisitions that found every slot taken and waited "
    "(limit: llm_calls and search in one process, shared across processes).", ["limit"],
    registry=REGISTRY)
# A tenant's share of its daily token quota, observed at each reservation: admitted (used
# plus reserved, this reservation included) or refused (what was already used and reserved).
# A histogram, not a gauge per tenant: no tenant label, it sums over worker processes, and
# "reservations made above 80%" (the bucket bound below) is the warning alert; which tenant
# it is, `rag quota usage` or the audit log tells. 0.8 is the alert's threshold, a bound.
QUOTA_USAGE_FRACTION = Histogram(
    "rag_quota_usage_fraction", "Tenant's daily token quota usage (used + reserved) / quota "
    "at each reservation, admitted or refused.",
    buckets=(0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0), registry=REGISTRY)
CONCURRENCY_WAIT_SECONDS = Histogram(
    "rag_concurrency_wait_seconds", "Time from asking for a concurrency slot to holding it "
    "(every acquisition, a free slot included).", ["limit"], buckets=_FAST_BUCKETS,
    registry=REGISTRY)

# --- row-level security (rag_core.ops.rls_sampler) -----------------------------------------
# The policy's cost in one tenant search: the sampler's difference between the search with
# the policy in force and the same search with only its explicit tenant filter (negative
# differences, noise, count as 0). 0.1 s is the warning alert's threshold, a bound.
RLS_OVERHEAD_SECONDS = Histogram(
    "rag_rls_overhead_seconds", "Sampled cost of the RLS policy in one tenant search "
    "(server time with the policy minus without it).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY)
RLS_SAMPLES = Counter(
    "rag_rls_samples", "RLS overhead samples by outcome (ok, no_tenant: no tenant has "
    "vectors yet, failed: the search or the admin connection failed).", ["outcome"],
    registry=REGISTRY)
