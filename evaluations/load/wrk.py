"""wrk, the HTTP load generator (Debian's package), driven by generated Lua scripts.

Each script POSTs JSON to ``/v1/query`` with the bench tenant's bearer key: the cached
phase cycles through the warmed questions (each thread from its own offset), the uncached
phase makes every request's question unique (a per-thread counter). ``response()`` counts
responses and non-2xx statuses per thread; ``done()`` sums the threads and prints ONE line,
``RAG_WRK_JSON {...}``, with wrk's request count, socket errors by kind and the latency
percentiles (wrk reports microseconds; converted to ms here). Only the loopback is loaded,
and only for the duration given: wrk stops by itself.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rag_core.errors import BenchmarkError

__all__ = ["WrkResult", "cached_script", "run_wrk", "uncached_script", "wrk_binary",
           "wrk_version"]

MARKER = "RAG_WRK_JSON "

# Shared by both scripts: per-thread ids and counters, the summing done().
_COMMON = r"""
local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("id", thread_count)
  table.insert(threads, thread)
  thread_count = thread_count + 1
end

function init(args)
  n = 0
  responses = 0
  non2xx = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad, answered = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    answered = answered + (thread:get("responses") or 0)
  end
  local e = summary.errors
  io.write(string.format("RAG_WRK_JSON {\"requests\":%.0f,\"duration_us\":%.0f,"
    .. "\"connect_errors\":%.0f,\"read_errors\":%.0f,\"write_errors\":%.0f,"
    .. "\"status_errors\":%.0f,\"timeouts\":%.0f,\"non_2xx\":%.0f,\"responses\":%.0f,"
    .. "\"p50_us\":%.0f,\"p95_us\":%.0f,\"p99_us\":%.0f,\"mean_us\":%.1f,\"max_us\":%.0f}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    bad, answered, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max))
end
"""

_HEADERS = """
local headers = {{["Authorization"] = "Bearer " .. {key}, ["Content-Type"] = "application/json"}}
"""

_CACHED = """
local bodies = {{
{bodies}
}}

function request()
  n = n + 1
  local body = bodies[((id * 7919 + n) % #bodies) + 1]
  return wrk.format("POST", "/v1/query", headers, body)
end
"""

_UNCACHED = """
local topics = {{"vitamin D and bone density", "smoking and lung cancer", "T cell antigens",
  "antibiotic resistance", "obesity and diabetes", "aspirin and the heart",
  "microRNA gene regulation", "sleep and memory"}}

function request()
  n = n + 1
  local question = "Load " .. {tag} .. " t" .. id .. " n" .. n .. ": what is known about "
    .. topics[(n % #topics) + 1] .. "?"
  return wrk.format("POST", "/v1/query", headers, "{{\\"question\\":\\"" .. question .. "\\"}}")
end
"""


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal (ASCII in, as json.dumps gives)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def cached_script(questions: list[str], key: str) -> str:
    """The cached phase's script: each request one of ``questions``."""
    bodies = ",\n".join(_lua_string(json.dumps({"question": q})) for q in questions)
    return (_COMMON + _HEADERS.format(key=_lua_string(key))
            + _CACHED.format(bodies=bodies))


def uncached_script(key: str, tag: str) -> str:
    """The uncached phase's script: every request a question never asked before (``tag``
    tells this run's apart from an earlier run's: letters and digits only)."""
    if not tag.isalnum():
        raise BenchmarkError(f"the uncached phase's tag {tag!r} must be letters and digits",
                             value=tag)
    return (_COMMON + _HEADERS.format(key=_lua_string(key))
            + _UNCACHED.format(tag=_lua_string(tag)))


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as its ``done()`` reported it."""

    requests: int           # responses wrk completed (any status)
    duration_s: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    non_2xx: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    cpu_s: float            # wrk's own CPU time (it shares the machine with the service)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """Requests that failed: socket errors, timeouts and non-2xx responses."""
        return (self.connect_errors + self.read_errors + self.write_errors + self.timeouts
                + self.non_2xx)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchmarkError("wrk is not installed (Debian: apt-get install wrk; "
                             "scripts/system-packages.sh installs it)", value="wrk")
    return found


def wrk_version() -> str:
    """wrk's own version line (``wrk debian/4.1.0-3 [epoll] ...``), up to its copyright."""
    done = subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True,
                          check=False, timeout=30)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "unknown"


def run_wrk(url: str, script: Path, *, threads: int, connections: int, duration_s: int,
            timeout_s: int) -> WrkResult:
    """Run wrk against ``url`` for ``duration_s`` with ``script``; its summary line."""
    args = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s",
            "--latency", f"--timeout={timeout_s}s", "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(args, capture_output=True, text=True, check=False,
                          timeout=duration_s + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise BenchmarkError(f"wrk exited with code {done.returncode} without its summary: "
                             f"{(done.stderr or done.stdout).strip()[-500:]}", value=args)
    data = json.loads(lines[-1][len(MARKER):])
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(
        requests=int(data["requests"]), duration_s=data["duration_us"] / 1e6,
        connect_errors=int(data["connect_errors"]), read_errors=int(data["read_errors"]),
        write_errors=int(data["write_errors"]), timeouts=int(data["timeouts"]),
        non_2xx=int(data["non_2xx"]), p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000, max_ms=data["max_us"] / 1000, cpu_s=cpu_s)
