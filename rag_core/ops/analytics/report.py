"""What a data quality run found: per mart, per expectation, the offending rows.

One :class:`CheckReport` serves every reader: ``as_dict()`` for ``--json`` and the flow's
return value, ``summary()`` for the error that fails a command or a flow run (which
expectation, on which column, broke on how many rows, with a sample of them named by their
key columns), ``markdown()`` and ``table()`` for the flow run's Prefect artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckReport", "ExpectationOutcome", "MartOutcome"]

_SHOWN_FAILURES = 20  # expectations listed in a summary; the count says the rest
_SHOWN_ROWS = 3       # offending rows quoted per expectation in a summary


@dataclass(frozen=True)
class ExpectationOutcome:
    mart: str
    expectation: str          # Great Expectations' type, e.g. expect_column_values_to_be_between
    columns: tuple[str, ...]
    rule: str
    success: bool
    checked_rows: int | None = None
    unexpected_count: int | None = None
    # A sample of the offending rows: their key columns and the checked column(s).
    rows: tuple[dict[str, Any], ...] = ()
    # Why it could not be evaluated (a missing column, a failed query), if so.
    exception: str | None = None

    @property
    def where(self) -> str:
        return f"{self.mart}.{'/'.join(self.columns)}" if self.columns else self.mart

    def line(self) -> str:
        if self.exception is not None:
            return f"{self.where}: {self.expectation} could not be evaluated: {self.exception}"
        shown = "; ".join(", ".join(f"{k}={v!r}" for k, v in row.items())
                          for row in self.rows[:_SHOWN_ROWS])
        more = (self.unexpected_count or 0) - min(len(self.rows), _SHOWN_ROWS)
        rows = f"{self.unexpected_count} of {self.checked_rows} rows"
        return (f"{self.where}: {self.expectation} ({self.rule}) broken by {rows}"
                + (f": {shown}" if shown else "") + (f" and {more} more" if more > 0 else ""))

    def as_dict(self) -> dict[str, Any]:
        return {"mart": self.mart, "expectation": self.expectation,
                "columns": list(self.columns), "rule": self.rule, "success": self.success,
                "checked_rows": self.checked_rows, "unexpected_count": self.unexpected_count,
                "rows": [dict(r) for r in self.rows], "exception": self.exception}


@dataclass(frozen=True)
class MartOutcome:
    mart: str
    missing: bool = False     # the table was not there (never built, or its build failed)
    rows: int | None = None
    expectations: tuple[ExpectationOutcome, ...] = ()

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    @property
    def success(self) -> bool:
        return not self.missing and not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"mart": self.mart, "success": self.success, "missing": self.missing,
                "rows": self.rows, "expectations": len(self.expectations),
                "failed": len(self.failures)}


@dataclass(frozen=True)
class CheckReport:
    schema: str
    marts: tuple[MartOutcome, ...]
    data_docs: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(m.success for m in self.marts)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for m in self.marts for e in m.failures]

    @property
    def missing(self) -> list[str]:
        return [m.mart for m in self.marts if m.missing]

    def summary(self) -> str:
        """One line per broken expectation (at most 20) and per missing mart."""
        checked = sum(len(m.expectations) for m in self.marts)
        if self.success:
            return (f"data quality: all {checked} expectations on {len(self.marts)} marts "
                    f"of {self.schema} passed")
        failures = self.failures
        head = (f"data quality check failed: {len(failures)} of {checked} expectations "
                f"broken" + (f", marts missing: {', '.join(self.missing)}"
                             if self.missing else ""))
        lines = [head, *(f"- {f.line()}" for f in failures[:_SHOWN_FAILURES])]
        if len(failures) > _SHOWN_FAILURES:
            lines.append(f"- and {len(failures) - _SHOWN_FAILURES} more")
        if self.data_docs is not None:
            lines.append(f"data docs: {self.data_docs}")
        return "\n".join(lines)

    def table(self) -> list[dict[str, Any]]:
        """Every broken expectation as a row (a Prefect table artifact)."""
        return [{"mart": f.mart, "expectation": f.expectation, "column": "/".join(f.columns),
                 "rule": f.rule, "failing_rows": f.unexpected_count,
                 "checked_rows": f.checked_rows,
                 "sample": "; ".join(", ".join(f"{k}={v}" for k, v in row.items())
                                     for row in f.rows[:_SHOWN_ROWS]) or f.exception}
                for f in self.failures]

    def markdown(self) -> str:
        """The run as a Markdown document (a Prefect markdown artifact)."""
        lines = [f"# Data quality of {self.schema}", "",
                 "**passed**" if self.success else "**failed**", "",
                 "| mart | rows | expectations | failed |", "|---|---|---|---|"]
        lines += [f"| {m.mart} | {'missing' if m.missing else m.rows} | "
                  f"{len(m.expectations)} | {len(m.failures)} |" for m in self.marts]
        if self.failures:
            lines += ["", "| expectation | column | rule | failing rows | sample |",
                      "|---|---|---|---|---|"]
            lines += [f"| {row['expectation']} | {row['mart']}.{row['column']} | "
                      f"{row['rule']} | {row['failing_rows']} of {row['checked_rows']} | "
                      f"{_cell(row['sample'])} |" for row in self.table()]
        if self.data_docs is not None:
            lines += ["", f"Data docs: `{self.data_docs}`"]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.success, "schema": self.schema,
                "marts": [m.as_dict() for m in self.marts],
                "failures": [f.as_dict() for f in self.failures],
                "missing": self.missing,
                "data_docs": None if self.data_docs is None else str(self.data_docs),
                **self.extra}


def _cell(value: object) -> str:
    return str(value or "").replace("|", "\\|").replace("\n", " ")
