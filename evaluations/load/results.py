"""The numbers of one ``rag bench load`` run: the ``--json`` object (the issue's keys first)
and the report under ``reports/load/<timestamp>/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from evaluations.common.reports import Report, cpu_model
from evaluations.load.config import CACHED_P95_GOAL_MS, CACHED_RPS_GOAL, LoadBenchConfig
from evaluations.load.wrk import WrkResult

__all__ = ["LoadBenchResult", "write_report"]


@dataclass(frozen=True)
class LoadBenchResult:
    config: LoadBenchConfig
    cached: WrkResult
    uncached: WrkResult
    warmup_requests: int
    warmup_failures: int          # warm-up requests not 200, or not cached the second time
    queries_served: int           # the service's own count of /v1/query responses
    audit_rows_written: int
    server_cpu_s: float           # the workers' CPU time during the cached phase
    wrk_version: str
    load_average_before: float    # 1-minute load average when the run began

    @property
    def completed(self) -> int:
        """Requests that got a response: wrk's (both phases) and the warm-up's."""
        return self.cached.requests + self.uncached.requests + self.warmup_requests

    @property
    def audit_rows_expected(self) -> int:
        """One row per query the service answered: every request wrk completed plus the
        warm-up, plus the few wrk had sent and stopped waiting for when its time was up
        (the service answered them anyway, so they are audited too)."""
        return max(self.queries_served, self.completed)

    @property
    def errors(self) -> int:
        return self.cached.errors + self.uncached.errors + self.warmup_failures

    def goals(self) -> dict[str, bool]:
        return {"cached_rps_ge_1000": self.cached.rps >= CACHED_RPS_GOAL,
                "cached_p95_lt_100ms": self.cached.p95_ms < CACHED_P95_GOAL_MS,
                "zero_errors": self.errors == 0,
                "every_request_audited": self.audit_rows_written == self.audit_rows_expected}

    def as_dict(self) -> dict[str, Any]:
        c, u, cfg = self.cached, self.uncached, self.config
        return {
            "cached_rps": round(c.rps, 1), "cached_p50_ms": round(c.p50_ms, 3),
            "cached_p95_ms": round(c.p95_ms, 3), "cached_p99_ms": round(c.p99_ms, 3),
            "uncached_rps": round(u.rps, 1), "uncached_p50_ms": round(u.p50_ms, 3),
            "uncached_p95_ms": round(u.p95_ms, 3), "uncached_p99_ms": round(u.p99_ms, 3),
            "errors": self.errors,
            "audit_rows_expected": self.audit_rows_expected,
            "audit_rows_written": self.audit_rows_written,
            "cached_requests": c.requests, "uncached_requests": u.requests,
            "cached_errors": c.errors, "uncached_errors": u.errors,
            "cached_max_ms": round(c.max_ms, 3), "uncached_max_ms": round(u.max_ms, 3),
            "warmup_requests": self.warmup_requests, "warmup_failures": self.warmup_failures,
            "queries_served": self.queries_served,
            "requests_abandoned_by_wrk": max(0, self.queries_served - self.completed),
            # CPU shares of the cached phase, in cores (2.0 = both cores of this machine)
            "server_cpu_cores": round(self.server_cpu_s / max(c.duration_s, 1e-9), 2),
            "wrk_cpu_cores": round(c.cpu_s / max(c.duration_s, 1e-9), 2),
            "cpu": cpu_model(), "logical_cores": psutil.cpu_count(logical=True),
            "load_average_before": round(self.load_average_before, 2),
            "workers": cfg.workers, "connections": cfg.connections,
            "uncached_connections": cfg.uncached_connections,
            "duration_s": cfg.cached_duration_s, "uncached_duration_s": cfg.uncached_duration_s,
            "wrk_threads": cfg.wrk_threads, "wrk_version": self.wrk_version,
            "llm_latency_ms": cfg.llm_latency_ms, "docs": cfg.docs,
            "warm_questions": cfg.warm_questions, "mode": cfg.mode,
            "goals": self.goals(),
        }


def write_report(result: LoadBenchResult, root: Path | None = None) -> Path:
    """``reports/load/<timestamp>/`` with report.md and results.json; its folder."""
    data = result.as_dict()
    report = Report("load", "HTTP load: rag serve under wrk")
    report.results = data
    report.add(f"`rag serve --workers {data['workers']}` on 127.0.0.1, the fake LLM at "
               f"{data['llm_latency_ms']} ms per call, {data['docs']} SciFact abstracts; wrk "
               f"({data['wrk_version']}) with {data['wrk_threads']} threads on the same "
               f"machine (1-minute load average {data['load_average_before']} at the start).")
    report.table(["phase", "connections", "s", "requests", "req/s", "p50 ms", "p95 ms",
                  "p99 ms", "errors"],
                 [["cached", data["connections"], data["duration_s"], data["cached_requests"],
                   data["cached_rps"], data["cached_p50_ms"], data["cached_p95_ms"],
                   data["cached_p99_ms"], data["cached_errors"]],
                  ["uncached", data["uncached_connections"], data["uncached_duration_s"],
                   data["uncached_requests"], data["uncached_rps"], data["uncached_p50_ms"],
                   data["uncached_p95_ms"], data["uncached_p99_ms"],
                   data["uncached_errors"]]])
    report.add(f"Audit: {data['audit_rows_written']} rows written of "
               f"{data['audit_rows_expected']} expected ({data['warmup_requests']} warm-up "
               f"requests, {data['requests_abandoned_by_wrk']} answered after wrk stopped "
               f"waiting). CPU during the cached phase: service {data['server_cpu_cores']} "
               f"cores, wrk {data['wrk_cpu_cores']} cores of {data['logical_cores']}.")
    report.add("Goals: " + ", ".join(f"{name} {'yes' if ok else 'NO'}"
                                     for name, ok in data["goals"].items()))
    return report.write(root)
