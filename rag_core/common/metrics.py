"""Process metrics (Prometheus client registry).

Counters that matter for alerting live here so that every module increments the same
object and a Prefect worker or the CLI can expose or print them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

CROSS_TENANT_ROWS_BLOCKED = Counter(
    "rag_cross_tenant_rows_blocked",
    "Rows of another tenant that reached the application and were refused (must stay 0).",
    registry=REGISTRY,
)


CACHE_LOOKUPS = Counter("rag_cache_lookups", "Cache lookups by outcome.", ["cache", "outcome"],
                        registry=REGISTRY)

# Audit spool: a line that cannot be read back (a process killed mid-write, a damaged file)
# is set aside, not replayed and not dropped; any increase deserves a look.
AUDIT_SPOOL_QUARANTINED = Counter(
    "rag_audit_spool_quarantined",
    "Spooled audit lines moved to the quarantine folder instead of the database.",
    registry=REGISTRY,
)


def counter_value(counter: Counter) -> float:
    """Current value of an unlabelled counter (for reports and tests)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0
