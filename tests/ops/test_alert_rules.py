"""The alert rules, their unit tests and the Grafana dashboard, checked with the real
promtool, and kept in step with the product's metric registry: a metric renamed or a label
dropped in the code fails here instead of leaving an alert that can never fire.

promtool comes from Debian's prometheus package (scripts/system-packages.sh installs it);
the suite fails rather than skips without it."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import utils

from rag_core.common.metrics import REGISTRY
from tests.conftest import REPO_ROOT

# Every metric a serving process (and the command line) registers: the modules that define
# them register into REGISTRY when imported, and these import them all.
for _module in ("rag_core.api.app", "rag_core.cli.app"):
    importlib.import_module(_module)

# How the exposition spells a bucket bound (untyped in prometheus_client).
_go_float = cast(Callable[[float], str], utils.floatToGoString)

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "rag-platform.json"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"

# The seed's "Monitoring & Rollback Procedures": four alerts page, four warn.
SEVERITIES = {
    "RagCrossTenantLeak": "page", "RagCircuitBreakerOpen": "page",
    "RagHighErrorRate": "page", "RagHighLatencyP95": "page",
    "RagCacheHitRateLow": "warning", "RagTokenQuotaHigh": "warning",
    "RagConcurrencyLimitHit": "warning", "RagRlsOverheadHigh": "warning",
}
# Labels Prometheus adds to every scraped series, whatever the product defines.
TARGET_LABELS = {"job", "instance"}
# Grafana's variables, as a Prometheus server would see them after substitution.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$job": ".*"}

_METRIC = re.compile(r"\brag_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(rag_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: run scripts/system-packages.sh"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def exposed_series() -> dict[str, set[str]]:
    """Every sample name the registry can expose, with the labels it carries (histogram
    series with their ``le``), derived from the registry itself."""
    series: dict[str, set[str]] = {}
    collectors = getattr(REGISTRY, "_collector_to_names", {})
    for collector in collectors:
        for family in collector.describe():
            labels = set(getattr(collector, "_labelnames", ()))
            if family.type == "counter":
                names = {f"{family.name}_total": labels}
            elif family.type == "histogram":
                names = {f"{family.name}_bucket": labels | {"le"},
                         f"{family.name}_count": labels, f"{family.name}_sum": labels}
            else:
                names = {family.name: labels}
            series.update(names)
    return series


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in panels(dashboard())
            for target in panel.get("targets", [])]


def substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def check_names_and_labels(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What in ``expr`` the registry does not have: a metric, or a label of a metric."""
    problems = [f"unknown metric {name}" for name in _METRIC.findall(expr)
                if name not in series]
    for name, matchers in _SELECTOR.findall(expr):
        if name not in series:
            continue  # reported above
        allowed = series[name] | TARGET_LABELS
        problems += [f"{name} has no label {label}" for label in _MATCHER.findall(matchers)
                     if label not in allowed]
    used = {name for name in _METRIC.findall(expr) if name in series}
    allowed_anywhere = set().union(*(series[name] for name in used)) | TARGET_LABELS \
        if used else TARGET_LABELS
    for grouping in _GROUPING.findall(expr):
        problems += [f"grouping by {label}, which none of {sorted(used)} has"
                     for label in (part.strip() for part in grouping.split(","))
                     if label and label not in allowed_anywhere]
    return problems


# --- promtool --------------------------------------------------------------------------------
def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(SEVERITIES)} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "FAILED" not in done.stdout + done.stderr


def test_promtool_fails_a_rule_file_that_is_wrong(tmp_path: Path) -> None:
    # The checks above can fail: a rule whose query does not parse is refused.
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n"
                      "        expr: sum(rate(rag_http_requests_total[5m])\n")
    done = promtool("check", "rules", str(broken))
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == set(SEVERITIES)
    assert quiet == set(SEVERITIES)


# --- the rules themselves ------------------------------------------------------------------
def test_the_seeds_eight_alerts_with_their_severities_and_runbook_anchors() -> None:
    rules = alert_rules()
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules} == SEVERITIES
    anchors = {slug(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines()
               if line.startswith("#")}
    for rule in rules:
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in anchors, notes["runbook_url"]


def test_alerts_use_only_metrics_and_labels_the_product_exposes() -> None:
    series = exposed_series()
    assert "rag_http_requests_total" in series and "rag_rls_overhead_seconds_bucket" in series
    for rule in alert_rules():
        assert _METRIC.search(rule["expr"]), rule["alert"]
        assert check_names_and_labels(rule["expr"], series) == [], rule["alert"]


def test_the_name_check_catches_a_renamed_metric_or_label() -> None:
    series = exposed_series()
    assert check_names_and_labels("rate(rag_http_requests{route='x'}[5m])", series) == \
        ["unknown metric rag_http_requests"]
    assert check_names_and_labels('sum(rate(rag_cache_lookups_total{tenant="t"}[5m]))',
                                  series) == ["rag_cache_lookups_total has no label tenant"]
    assert check_names_and_labels("sum by (tenant) (rate(rag_llm_calls_total[5m]))",
                                  series) != []


def test_histogram_bounds_in_the_rules_are_buckets_of_their_metric() -> None:
    # le="0.8" on a histogram whose bounds lack 0.8 would select nothing: the alert would
    # never fire. Bounds as the exposition spells them.
    bounds: dict[str, set[str]] = {}
    for collector in getattr(REGISTRY, "_collector_to_names", {}):
        upper = getattr(collector, "_upper_bounds", None)
        if upper is not None:
            bounds[f"{collector._name}_bucket"] = {_go_float(b) for b in upper}
    selected = [(name, le) for rule in alert_rules()
                for name, matchers in _SELECTOR.findall(rule["expr"])
                for le in re.findall(r'\ble="([^"]+)"', matchers)]
    assert selected, "no rule selects a bucket"
    for name, le in selected:
        assert le in bounds[name], (name, le, sorted(bounds[name]))
    # The quantile thresholds are bounds too: p95 > 3 s and the RLS median > 100 ms.
    assert "3.0" in bounds["rag_http_request_seconds_bucket"]
    assert "0.1" in bounds["rag_rls_overhead_seconds_bucket"]


# --- the dashboard ---------------------------------------------------------------------------
def test_the_dashboard_is_a_loadable_grafana_dashboard() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()


def test_dashboard_queries_parse_and_use_only_exposed_metrics(tmp_path: Path) -> None:
    series = exposed_series()
    queries = dashboard_queries()
    for expr in queries:
        assert check_names_and_labels(expr, series) == [], expr
    # promtool parses each query as a recording rule (Grafana's variables substituted).
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": substituted(expr)}
        for i, expr in enumerate(queries)]}]}
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


@pytest.mark.parametrize("metric", [
    "rag_http_requests_total", "rag_http_request_seconds_bucket", "rag_stage_seconds_bucket",
    "rag_cache_lookups_total", "rag_breaker_state", "rag_llm_calls_total",
    "rag_llm_tokens_total", "rag_limit_rejections_total", "rag_quota_usage_fraction_bucket",
    "rag_concurrency_waits_total", "rag_cross_tenant_rows_blocked_total",
    "rag_rls_overhead_seconds_bucket", "rag_audit_writer_rows_written_total"])
def test_the_dashboard_shows(metric: str) -> None:
    assert any(metric in expr for expr in dashboard_queries())


def test_every_metric_an_alert_reads_is_on_the_dashboard() -> None:
    def families(expr: str) -> set[str]:
        return {re.sub(r"_(bucket|count|sum)$", "", name) for name in _METRIC.findall(expr)}

    shown = set().union(*(families(expr) for expr in dashboard_queries()))
    for rule in alert_rules():
        assert families(rule["expr"]) <= shown, rule["alert"]
