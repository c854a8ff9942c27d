"""The canary and control cohorts of a flag as the audit log saw them since a moment.

Every question's audit row carries ``rollout_cohort`` (``flag=canary,other=control``,
:func:`rag_core.db.flag_cohorts.cohort_label`), written by whichever process answered it
(API workers, Prefect workers), so the audit log is the one place where both cohorts of
every process meet; a process's own metrics would see only its share. Only question rows
count (``query`` and ``sub_query``; a ``batch`` row sums its questions).

These reads go across tenants, so they run on the admin connection. On a managed
PostgreSQL whose owner is not a superuser, FORCEd row-level security hides every row from
it: the cohorts then look empty and every gate holds (a rollout never advances on data it
cannot see); give the owner BYPASSRLS, or read through a role made for reporting.

The breaker gate is read from the same rows: the span between the first and the last
question refused with ``circuit_open`` in the window, in either cohort (the breaker is
shared by every process and both cohorts). It reads a lower bound of the time the breaker
was open, from what the shared breaker refused, without a second source of truth.

All of a measurement's reads share one REPEATABLE READ snapshot, so its counts agree with
each other while other processes go on writing audit rows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from rag_core.codes import ErrorCode
from rag_core.ops.rollout.gates import CohortStats

__all__ = ["CohortMeasurement", "measure_cohorts"]

Connection = psycopg.Connection[tuple[Any, ...]]
AdminConnector = Callable[[], AbstractContextManager[Connection]]

_TAGGED = """
    WITH tagged AS (
        SELECT CASE WHEN strpos(',' || rollout_cohort || ',', %(canary)s) > 0 THEN 'canary'
                    WHEN strpos(',' || rollout_cohort || ',', %(control)s) > 0 THEN 'control'
               END AS cohort,
               tenant_id, error_code, cache_hit,
               (latency_ms ->> 'total')::double precision AS total_ms
        FROM rag.audit_log
        WHERE occurred_at >= %(since)s AND kind IN ('query', 'sub_query')
          AND rollout_cohort IS NOT NULL)
"""
# Both composed from constants only: S608 does not apply.
_PER_COHORT = _TAGGED + """
    SELECT cohort, count(*), count(DISTINCT tenant_id),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms),
           count(*) FILTER (WHERE cache_hit),
           count(*) FILTER (WHERE error_code = %(leak)s),
           array_agg(DISTINCT tenant_id)
    FROM tagged WHERE cohort IS NOT NULL GROUP BY cohort
"""  # noqa: S608
_CODES = _TAGGED + """
    SELECT cohort, error_code, count(*) FROM tagged
    WHERE cohort IS NOT NULL AND error_code IS NOT NULL GROUP BY cohort, error_code
"""  # noqa: S608
# Today's tokens (UTC day, the quota's) of each tenant seen in the window.
_TOKENS_TODAY = """
    SELECT tenant_id, sum(prompt_tokens + completion_tokens) FROM rag.audit_log
    WHERE occurred_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
      AND kind IN ('query', 'sub_query') AND tenant_id = ANY(%(tenants)s)
    GROUP BY tenant_id
"""
_BREAKER_SPAN = """
    SELECT coalesce(extract(epoch FROM max(occurred_at) - min(occurred_at)), 0)
    FROM rag.audit_log
    WHERE occurred_at >= %(since)s AND kind IN ('query', 'sub_query')
      AND error_code = %(open)s
"""


@dataclass(frozen=True)
class CohortMeasurement:
    canary: CohortStats
    control: CohortStats
    breaker_open_s: float
    since: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "canary": self.canary.as_dict(),
                "control": self.control.as_dict(),
                "breaker_open_s": round(self.breaker_open_s, 3)}


def measure_cohorts(admin: AdminConnector, flag: str, since: datetime, *,
                    tokens_per_day: int) -> CohortMeasurement:
    """Both cohorts of ``flag`` over the audit rows since ``since``."""
    params = {"canary": f",{flag}=canary,", "control": f",{flag}=control,", "since": since,
              "leak": ErrorCode.CROSS_TENANT_BLOCKED.value,
              "open": ErrorCode.CIRCUIT_OPEN.value}
    with admin() as conn, conn.transaction():
        # One snapshot for every read: on the autocommit connection each statement would
        # take its own, and rows written between them (traffic goes on while a stage is
        # judged) would count as errors without counting as requests (a rate above 1).
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = conn.execute(_PER_COHORT, params).fetchall()
        codes: dict[str, dict[str, int]] = {"canary": {}, "control": {}}
        for cohort, code, count in conn.execute(_CODES, params).fetchall():
            codes[cohort][str(code)] = int(count)
        tenants = {str(r[0]): list(r[6]) for r in rows}
        usage: dict[str, float] = {}
        for cohort, members in tenants.items():
            spent = conn.execute(_TOKENS_TODAY, {"tenants": members}).fetchall()
            usage[cohort] = max((int(t) for _, t in spent), default=0) / tokens_per_day
        span = conn.execute(_BREAKER_SPAN, params).fetchone()
    stats = {str(r[0]): CohortStats(
        requests=int(r[1]), tenants=int(r[2]),
        error_codes=codes.get(str(r[0]), {}),
        p95_ms=None if r[3] is None else round(float(r[3]), 3), cache_hits=int(r[4]),
        cross_tenant_rows=int(r[5]), max_quota_usage=round(usage.get(str(r[0]), 0.0), 6))
        for r in rows}
    return CohortMeasurement(stats.get("canary", CohortStats()),
                             stats.get("control", CohortStats()),
                             float(span[0]) if span else 0.0, since)
