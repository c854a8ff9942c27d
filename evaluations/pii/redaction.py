"""Precision and recall of ``rag_core.pii.redactor.redact`` on the labelled set ``pii_cases.jsonl``.

    .venv/bin/python -m evaluations.pii_report [--cases PATH] [--compare-presidio]

(``evaluations.pii_report`` is the command's entry point; the code lives here.)

Matching is entity-level and exact: a prediction is a true positive when its type *and* its
span equal a labelled entity's (the span of a labelled value is its occurrence in the
case's text; repeated values take successive occurrences). A prediction with the right span
but the wrong type counts as one false positive and one false negative.

Prints a table, then one JSON line (the last line of output) with per-entity and overall
counts, precision, recall and F1, plus look-alike violations (a look-alike case with any
finding, or a ``keep`` value that did not survive redaction).

``--compare-presidio`` runs Presidio's pattern recognizers (no spaCy model, offline public
suffix list) on the same set and prints their numbers too; importing Presidio pulls in
spaCy/transformers/torch, so this takes several seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rag_core.pii import EntityType, Finding, PiiRedactor

CASES_RESOURCE = ("rag_core", "data/pii_cases.jsonl")

Detector = Callable[[str], list[Finding]]


@dataclass(frozen=True)
class Case:
    text: str
    entities: list[tuple[str, str]]
    note: str
    keep: list[str] = field(default_factory=list)

    @property
    def is_lookalike(self) -> bool:
        return not self.entities


def load_cases(path: Path | None = None) -> list[Case]:
    """The labelled cases (default: the copy shipped in ``rag_core/data``)."""
    if path is None:
        package, name = CASES_RESOURCE
        raw = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    else:
        raw = path.read_text(encoding="utf-8")
    cases = []
    for line in raw.splitlines():
        if line.strip():
            item = json.loads(line)
            cases.append(Case(item["text"],
                              [(e["type"], e["value"]) for e in item["entities"]],
                              item.get("note", ""), list(item.get("keep", []))))
    return cases


def gold_spans(case: Case) -> set[tuple[str, int, int]]:
    """(type, start, end) of each labelled entity; repeated values use later occurrences."""
    spans: set[tuple[str, int, int]] = set()
    next_from: dict[str, int] = {}
    for kind, value in case.entities:
        start = case.text.find(value, next_from.get(value, 0))
        if start < 0:
            raise ValueError(f"labelled value {value!r} not in case text {case.text!r}")
        next_from[value] = start + len(value)
        spans.add((kind, start, start + len(value)))
    return spans


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4)}


@dataclass
class RedactionReport:
    """Counts per entity type and overall, look-alike violations, and the time spent."""

    per_entity: dict[str, Counts]
    overall: Counts
    cases: int
    lookalike_cases: int
    lookalike_violations: list[str]
    errors: list[str]  # one line per FP/FN, for debugging
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "lookalike_cases": self.lookalike_cases,
                "lookalike_violations": len(self.lookalike_violations),
                "overall": self.overall.as_dict(),
                "per_entity": {k: v.as_dict() for k, v in self.per_entity.items()},
                "ms_per_case": round(1000 * self.seconds / max(self.cases, 1), 3)}


def evaluate(cases: Iterable[Case], detector: Detector | None = None) -> RedactionReport:
    """Score ``detector`` (default: ``rag_core.pii.redactor``'s default redactor) on ``cases``."""
    find = detector or PiiRedactor().find
    per_entity = {kind.value: Counts() for kind in EntityType}
    overall = Counts()
    violations: list[str] = []
    errors: list[str] = []
    n_cases = n_lookalike = 0
    elapsed = 0.0
    for case in cases:
        n_cases += 1
        gold = gold_spans(case)
        started = time.perf_counter()
        findings = find(case.text)
        elapsed += time.perf_counter() - started
        predicted = {(f.entity_type.value, f.start, f.end) for f in findings}
        for kind, start, end in predicted | gold:
            counts = per_entity.setdefault(kind, Counts())
            in_gold, in_pred = (kind, start, end) in gold, (kind, start, end) in predicted
            if in_gold and in_pred:
                counts.tp += 1
                overall.tp += 1
            elif in_pred:
                counts.fp += 1
                overall.fp += 1
                errors.append(f"FP {kind} {case.text[start:end]!r} in {case.note!r}")
            else:
                counts.fn += 1
                overall.fn += 1
                errors.append(f"FN {kind} {case.text[start:end]!r} in {case.note!r}")
        if case.is_lookalike:
            n_lookalike += 1
            if predicted:
                violations.append(f"{case.note}: {case.text!r}")
        covered = [(f.start, f.end) for f in findings]
        for value in case.keep:
            at = case.text.find(value)
            if any(s < at + len(value) and at < e for s, e in covered):
                violations.append(f"{case.note}: kept value {value!r} was redacted")
    return RedactionReport(per_entity, overall, n_cases, n_lookalike, violations, errors, elapsed)


def format_table(report: RedactionReport, title: str) -> str:
    lines = [title, f"{'entity':<8} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} "
                    f"{'recall':>7} {'f1':>6}"]
    rows = [*report.per_entity.items(), ("overall", report.overall)]
    for name, c in rows:
        lines.append(f"{name:<8} {c.tp:>4} {c.fp:>4} {c.fn:>4} {c.precision:>9.3f} "
                     f"{c.recall:>7.3f} {c.f1:>6.3f}")
    lines.append(f"{report.cases} cases ({report.lookalike_cases} look-alike only), "
                 f"{len(report.lookalike_violations)} look-alike violations, "
                 f"{1000 * report.seconds / max(report.cases, 1):.3f} ms/case")
    return "\n".join(lines)


# --- optional comparison with Presidio's pattern recognizers ------------------------------
def presidio_detector() -> Detector:  # pragma: no cover - exercised by hand
    """Presidio 2.2 pattern recognizers, offline (no spaCy model, bundled suffix list)."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    offline_extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_extract(pattern_text).fqdn)

    names = {"CREDIT_CARD": EntityType.CARD, "EMAIL_ADDRESS": EntityType.EMAIL,
             "IBAN_CODE": EntityType.IBAN, "IP_ADDRESS": EntityType.IP,
             "US_SSN": EntityType.SSN, "PHONE_NUMBER": EntityType.PHONE}
    recognizers = [CreditCardRecognizer(), OfflineEmailRecognizer(), IbanRecognizer(),
                   IpRecognizer(), UsSsnRecognizer(), PhoneRecognizer()]

    def find(text: str) -> list[Finding]:
        results = []
        for recognizer in recognizers:
            # nlp_artifacts=None: pattern recognizers need no NLP engine (no spaCy model)
            results.extend(recognizer.analyze(text, recognizer.supported_entities,
                                              None))  # type: ignore[arg-type]
        results.sort(key=lambda r: (-(r.end - r.start), -r.score, r.start))
        kept: list[Any] = []
        for r in results:
            if all(r.end <= k.start or r.start >= k.end for k in kept):
                kept.append(r)
        kept.sort(key=lambda r: r.start)
        return [Finding(names[r.entity_type], r.start, r.end) for r in kept]

    return find


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--cases", type=Path, default=None, help="a JSONL file of cases")
    parser.add_argument("--compare-presidio", action="store_true")
    parser.add_argument("--show-errors", action="store_true", help="list every FP/FN")
    args = parser.parse_args(argv)

    cases = load_cases(args.cases)
    report = evaluate(cases)
    print(format_table(report, "rag_core.pii.redactor"))
    if args.show_errors:
        for line in report.errors + report.lookalike_violations:
            print("  " + line)
    result: dict[str, Any] = {"detector": "rag_core.pii.redactor", **report.as_dict()}
    if args.compare_presidio:
        started = time.perf_counter()
        detector = presidio_detector()
        load_s = time.perf_counter() - started
        theirs = evaluate(cases, detector)
        print()
        print(format_table(theirs, f"presidio pattern recognizers (import {load_s:.1f} s)"))
        if args.show_errors:
            for line in theirs.errors + theirs.lookalike_violations:
                print("  " + line)
        result["presidio"] = {"import_s": round(load_s, 1), **theirs.as_dict()}
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
