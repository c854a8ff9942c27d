"""``python -m evaluations.pii_report``: the documented command of the PII evaluation.

Kept as a module of its own so the command keeps working after the evaluation moved to
:mod:`evaluations.pii.redaction`; it only re-exports that module's interface.
"""

from __future__ import annotations

from evaluations.pii.redaction import (
    Case,
    Counts,
    RedactionReport,
    evaluate,
    format_table,
    gold_spans,
    load_cases,
    main,
    presidio_detector,
)

__all__ = ["Case", "Counts", "RedactionReport", "evaluate", "format_table", "gold_spans",
           "load_cases", "main", "presidio_detector"]

if __name__ == "__main__":
    raise SystemExit(main())
