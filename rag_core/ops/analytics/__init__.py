"""Data quality of the dbt marts: expectation suites (:mod:`.suites`) run as Great
Expectations checkpoints with data docs (:mod:`.checkpoint`), and what they found
(:mod:`.report`). Used by ``rag analytics check|run`` and the ``analytics`` flow.

Importing this package does not import Great Expectations (seconds): the checkpoint does,
on first use.
"""

from rag_core.ops.analytics.checkpoint import (
    check_marts,
    data_docs_dir,
    raise_on_failure,
    run_checks,
)
from rag_core.ops.analytics.report import CheckReport, ExpectationOutcome, MartOutcome
from rag_core.ops.analytics.suites import (
    ANALYTICS_SCHEMA,
    Expectation,
    MartSuite,
    QualityLimits,
    mart_suites,
)

__all__ = ["ANALYTICS_SCHEMA", "CheckReport", "Expectation", "ExpectationOutcome",
           "MartOutcome", "MartSuite", "QualityLimits", "check_marts", "data_docs_dir",
           "mart_suites", "raise_on_failure", "run_checks"]
