"""Record validation with Great Expectations.

Each batch of read records becomes a DataFrame checked against one expectation suite:
record readable (no parse problem: valid UTF-8, well-formed JSON, required fields), text
non-empty after trimming and within length bounds, no NUL characters (PostgreSQL text
cannot hold them), title within bounds, ids unique, tenant id well formed. GX reports the
failing row indices per expectation (result_format COMPLETE); every failing record is
rejected with the reasons of all expectations it failed, the rest proceed.

Uniqueness is also kept across batches of one job (a set of seen ids): GX sees one batch at
a time. Of duplicated ids the first occurrence is kept and later ones are rejected, naming
the line of the first.

GX takes seconds to import; ``warm_up()`` lets a caller import it on a background thread
while the embedding model loads.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from rag_core.common.tenancy import TENANT_ID_REGEX
from rag_core.ingestion.sources import SourceRecord


class ValidationPolicy(BaseModel, frozen=True):
    min_text_chars: int = Field(default=1, ge=1)
    max_text_chars: int = Field(default=2_000_000, ge=1)
    max_title_chars: int = Field(default=2_000, ge=0)


@dataclass(frozen=True)
class Rejection:
    record: SourceRecord
    reason: str


@dataclass(frozen=True)
class ValidationOutcome:
    accepted: list[SourceRecord]
    rejected: list[Rejection]


_gx_lock = threading.Lock()
_gx_module: Any = None


def _gx() -> Any:
    global _gx_module
    with _gx_lock:
        if _gx_module is None:
            import great_expectations as gx

            _gx_module = gx
        return _gx_module


def warm_up() -> threading.Thread:
    """Import Great Expectations on a daemon thread (it takes seconds)."""
    thread = threading.Thread(target=_gx, name="gx-import", daemon=True)
    thread.start()
    return thread


class RecordValidator:
    """Validates batches of one job's records; remembers ids across batches."""

    def __init__(self, policy: ValidationPolicy | None = None) -> None:
        self.policy = policy or ValidationPolicy()
        self._first_seen: dict[str, str] = {}  # source_uri -> where it was first seen
        self._definition: Any = None
        self._reasons: dict[str, str] = {}

    def _validation_definition(self) -> Any:
        if self._definition is not None:
            return self._definition
        gx = _gx()
        # The expectation classes are re-exported dynamically (mypy cannot see them).
        gxe: Any = importlib.import_module("great_expectations.expectations")
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                             metric_calculations=False)
        asset = context.data_sources.add_pandas("ingestion").add_dataframe_asset("records")
        batch = asset.add_batch_definition_whole_dataframe("batch")
        suite = context.suites.add(gx.ExpectationSuite(name="ingestion_records"))
        p = self.policy
        expectations: list[tuple[Any, str]] = [
            (gxe.ExpectColumnValuesToBeNull(column="problem"), "{problem}"),
            (gxe.ExpectColumnValueLengthsToBeBetween(
                column="text_trimmed", min_value=p.min_text_chars, max_value=p.max_text_chars),
             f"text length outside [{p.min_text_chars}, {p.max_text_chars}] characters "
             "after trimming (got {text_len})"),
            (gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex="\x00"),
             "text contains NUL characters"),
            (gxe.ExpectColumnValueLengthsToBeBetween(
                column="title", min_value=0, max_value=p.max_title_chars),
             f"title longer than {p.max_title_chars} characters"),
            (gxe.ExpectColumnValuesToBeUnique(column="source_uri"), "duplicate id"),
            (gxe.ExpectColumnValuesToMatchRegex(column="tenant_id", regex=TENANT_ID_REGEX),
             "invalid tenant id"),
        ]
        for expectation, reason in expectations:
            added = suite.add_expectation(expectation)
            self._reasons[added.id] = reason
        self._definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="ingestion_records", data=batch, suite=suite))
        return self._definition

    def validate(self, tenant_id: str, records: Sequence[SourceRecord]) -> ValidationOutcome:
        if not records:
            return ValidationOutcome([], [])
        # Imported here, like Great Expectations: pandas costs seconds of import that every
        # process building a Platform (each CLI command, each API worker) would pay.
        import pandas as pd

        frame = pd.DataFrame({
            "problem": [r.problem for r in records],
            "text": [r.text for r in records],
            "text_trimmed": [r.text.strip() for r in records],
            "title": [r.title for r in records],
            "source_uri": [r.source_uri for r in records],
            "tenant_id": [tenant_id] * len(records),
        })
        # Unreadable records have no text or id of their own: keep them out of the
        # content expectations so each is rejected for its one real reason.
        unreadable = frame["problem"].notna()
        frame.loc[unreadable, "text_trimmed"] = "-"
        frame.loc[unreadable, "source_uri"] = [f"\x00unreadable:{i}" for i in
                                               frame.index[unreadable]]
        result = self._validation_definition().run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "COMPLETE"})
        reasons: dict[int, list[str]] = {}
        for item in result.results:
            template = self._reasons[item.expectation_config.id]
            for index in item.result.get("unexpected_index_list") or []:
                row = int(index)
                if template == "duplicate id":
                    continue  # resolved below: the first occurrence is kept
                reasons.setdefault(row, []).append(template.format(
                    problem=records[row].problem, text_len=len(records[row].text.strip())))
        accepted: list[SourceRecord] = []
        rejected: list[Rejection] = []
        for row, record in enumerate(records):
            where = f"line {record.line_no}" if record.line_no else record.source
            if row not in reasons:
                first = self._first_seen.get(record.source_uri)
                if first is not None:
                    reasons[row] = [f"duplicate id {record.record_id or record.source_uri!r} "
                                    f"(first at {first})"]
                else:
                    self._first_seen[record.source_uri] = where
            if row in reasons:
                rejected.append(Rejection(record, "; ".join(reasons[row])))
            else:
                accepted.append(record)
        return ValidationOutcome(accepted, rejected)
