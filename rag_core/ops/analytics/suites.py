"""The expectation suites of the dbt marts, as plain data (no Great Expectations import).

Each :class:`MartSuite` names a mart of schema ``rag_analytics``, the columns that identify
one of its rows (shown for every failing row) and its expectations. Every allowed value comes
from the code that writes it, never a copy: tenant ids from
:data:`rag_core.common.tenancy.TENANT_ID_REGEX`, error codes from
:class:`rag_core.codes.ErrorCode`, cohorts and flag names from
:mod:`rag_core.db.flag_cohorts`. Latencies are bounded by :class:`QualityLimits`, derived
from the settings (the LLM call's timeout times the retry policy's attempts, times
:data:`LATENCY_BUDGET_FACTOR`): a question cannot legitimately take longer, so a larger value
is a mis-measured latency (seconds stored as milliseconds, a clock jump).

Kept apart from the runner (:mod:`rag_core.ops.analytics.checkpoint`) so the suites can be
read, listed and tested without the seconds Great Expectations takes to import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TENANT_ID_REGEX
from rag_core.config import Settings
from rag_core.db.flag_cohorts import COHORTS, FLAG_NAME_REGEX

__all__ = ["ANALYTICS_SCHEMA", "LATENCY_BUDGET_FACTOR", "Expectation", "MartSuite",
           "QualityLimits", "mart_suites"]

#: Where dbt builds the marts (the profile's schema ``rag`` + the project's ``analytics``).
ANALYTICS_SCHEMA = "rag_analytics"
#: A question's latency budget over its LLM calls' worst case (every attempt timing out):
#: room for the backoffs between attempts, retrieval and the wait for an LLM slot.
LATENCY_BUDGET_FACTOR = 2.0

_ERROR_CODES = [code.value for code in ErrorCode]
_FLAG_NAME = FLAG_NAME_REGEX.removeprefix("^").removesuffix("$")
_COHORT = "(" + "|".join(COHORTS) + ")"
#: fct_questions.rollout_cohort: the audit row's label (``flag=canary,other=control``, see
#: flag_cohorts.cohort_label) or ``none`` (staging's stand-in for no rollout).
ROLLOUT_LABEL_REGEX = rf"^(none|{_FLAG_NAME}={_COHORT}(,{_FLAG_NAME}={_COHORT})*)$"


class QualityLimits(BaseModel):
    """The numeric bounds the suites check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_latency_ms: float = Field(gt=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityLimits:
        worst_llm_s = settings.llm.timeout_s * settings.retry.attempts
        return cls(max_latency_ms=LATENCY_BUDGET_FACTOR * worst_llm_s * 1000.0)


@dataclass(frozen=True)
class Expectation:
    """One Great Expectations expectation: its class name in ``great_expectations.
    expectations``, its arguments, and the rule it stands for (in reports and data docs)."""

    kind: str
    kwargs: Mapping[str, Any]
    rule: str

    @property
    def columns(self) -> tuple[str, ...]:
        kw = self.kwargs
        if "column" in kw:
            return (str(kw["column"]),)
        if "column_A" in kw:
            return (str(kw["column_A"]), str(kw["column_B"]))
        return tuple(str(c) for c in kw.get("column_list", ()))


@dataclass(frozen=True)
class MartSuite:
    mart: str
    key_columns: tuple[str, ...]
    expectations: tuple[Expectation, ...] = field(default=())


def _not_null(*columns: str) -> list[Expectation]:
    return [Expectation("ExpectColumnValuesToNotBeNull", {"column": c}, "never null")
            for c in columns]


def _between(columns: Sequence[str], low: float | None, high: float | None,
             rule: str) -> list[Expectation]:
    return [Expectation("ExpectColumnValuesToBeBetween",
                        {"column": c, "min_value": low, "max_value": high}, rule)
            for c in columns]


def _counts(*columns: str) -> list[Expectation]:
    return _between(columns, 0, None, "a count: never negative")


def _ratios(*columns: str) -> list[Expectation]:
    return _between(columns, 0, 1, "a ratio: between 0 and 1")


def _latencies(limits: QualityLimits, *columns: str) -> list[Expectation]:
    return _between(columns, 0, limits.max_latency_ms,
                    f"a latency: between 0 and {limits.max_latency_ms:g} ms (the LLM timeout "
                    f"x attempts x {LATENCY_BUDGET_FACTOR:g})")


def _tenant_id(column: str = "tenant_id") -> list[Expectation]:
    return [Expectation("ExpectColumnValuesToMatchRegex",
                        {"column": column, "regex": TENANT_ID_REGEX},
                        "a tenant id (rag_core.common.tenancy.TENANT_ID_REGEX)")]


def _error_code(column: str = "error_code") -> list[Expectation]:
    return [Expectation("ExpectColumnValuesToBeInSet",
                        {"column": column, "value_set": _ERROR_CODES},
                        "a typed code (rag_core.codes.ErrorCode)")]


def _at_least(a: str, b: str, rule: str) -> Expectation:
    return Expectation("ExpectColumnPairValuesAToBeGreaterThanB",
                       {"column_A": a, "column_B": b, "or_equal": True}, rule)


def _fct_questions(limits: QualityLimits) -> MartSuite:
    return MartSuite("fct_questions", ("request_id",), (
        *_not_null("request_id", "tenant_id", "occurred_at", "kind"),
        Expectation("ExpectColumnValuesToBeUnique", {"column": "request_id"},
                    "one row per question"),
        *_tenant_id(),
        Expectation("ExpectColumnValuesToBeInSet",
                    {"column": "kind", "value_set": ["query", "sub_query"]},
                    "a question: a query or a batch member (no batch envelopes)"),
        *_counts("prompt_tokens", "completion_tokens", "total_tokens", "retries"),
        *_between(["cost_usd"], 0, None, "a cost: never negative"),
        *_latencies(limits, "latency_total_ms", "latency_llm_ms", "latency_search_ms"),
        *_error_code(),
        Expectation("ExpectColumnValuesToMatchRegex",
                    {"column": "rollout_cohort", "regex": ROLLOUT_LABEL_REGEX},
                    "'none' or flag=cohort pairs (rag_core.db.flag_cohorts.COHORTS)"),
    ))


def _unique(*columns: str) -> Expectation:
    return Expectation("ExpectCompoundColumnsToBeUnique", {"column_list": list(columns)},
                       "one row per " + ", ".join(columns))


def _token_cost_daily() -> MartSuite:
    key = ("tenant_id", "model", "occurred_on")
    return MartSuite("token_cost_daily", key, (
        *_not_null(*key), _unique(*key), *_tenant_id(),
        *_counts("questions", "prompt_tokens", "completion_tokens", "total_tokens"),
        *_between(["cost_usd"], 0, None, "a cost: never negative"),
    ))


def _latency_daily(limits: QualityLimits) -> MartSuite:
    key = ("occurred_on", "stage")
    return MartSuite("latency_daily", key, (
        *_not_null(*key), _unique(*key),
        *_between(["requests"], 1, None, "a group of at least one request"),
        *_latencies(limits, "p50_ms", "p95_ms", "p99_ms"),
        _at_least("p95_ms", "p50_ms", "percentiles in order: p95 >= p50"),
        _at_least("p99_ms", "p95_ms", "percentiles in order: p99 >= p95"),
    ))


def _errors_by_code_daily() -> MartSuite:
    key = ("occurred_on", "error_code")
    return MartSuite("errors_by_code_daily", key, (
        *_not_null(*key), _unique(*key), *_error_code(),
        *_counts("errors", "questions"),
        _at_least("questions", "errors", "no more errors than questions"),
        *_ratios("error_rate"),
    ))


def _rollout_cohort_health(limits: QualityLimits) -> MartSuite:
    return MartSuite("rollout_cohort_health", ("flag_key", "stage_number", "cohort"), (
        *_not_null("flag_key", "cohort"),
        Expectation("ExpectColumnValuesToMatchRegex",
                    {"column": "flag_key", "regex": FLAG_NAME_REGEX},
                    "a flag name (rag_core.db.flag_cohorts.FLAG_NAME_REGEX)"),
        Expectation("ExpectColumnValuesToBeInSet",
                    {"column": "cohort", "value_set": list(COHORTS)},
                    "a rollout's side (rag_core.db.flag_cohorts.COHORTS)"),
        *_between(["stage_percent"], 0, 100, "a percentage: between 0 and 100"),
        *_counts("questions", "errors", "avg_tokens"),
        _at_least("questions", "errors", "no more errors than questions"),
        *_ratios("error_rate", "cache_hit_ratio"),
        *_latencies(limits, "p50_latency_ms", "p95_latency_ms"),
        _at_least("p95_latency_ms", "p50_latency_ms", "percentiles in order: p95 >= p50"),
    ))


def mart_suites(limits: QualityLimits) -> tuple[MartSuite, ...]:
    """Every mart's suite, in the order they are checked."""
    return (_fct_questions(limits), _token_cost_daily(), _latency_daily(limits),
            _errors_by_code_daily(), _rollout_cohort_health(limits))
