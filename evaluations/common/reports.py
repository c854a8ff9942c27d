"""Benchmark reports: ``<reports>/<benchmark>/<timestamp>/`` with ``report.md``,
``results.json`` and any plots, plus the facts of the machine that produced them (CPU, cores,
memory, versions, git commit) and the exact command, so every number can be reproduced.

``<reports>`` is :func:`rag_core.config.reports_root`: ``RAG_REPORTS_DIR``; unset, the
checkout's ``reports/`` folder, or ``<state_dir>/reports`` when the package is installed.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from evaluations.common.paths import SOURCE_ROOT
from rag_core.config import Settings, get_settings
from rag_core.config import reports_root as settings_reports_root

_PACKAGES = ("torch", "onnxruntime", "fastembed", "sentence-transformers", "psycopg",
             "pgvector", "prefect", "numpy", "ranx")


def reports_root(settings: Settings | None = None) -> Path:
    """Where reports go for ``settings`` (default: this process's settings)."""
    return settings_reports_root(settings or get_settings())


def git_commit() -> str | None:
    """The commit of the checkout the code runs from (None when installed or not git)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_ROOT, text=True,
                                capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(), "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "platform": platform.platform(),
        "packages": versions, "git_commit": git_commit(),
    }


def invocation() -> str:
    """The command line that is running, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("/rag", "rag")):
        argv[0] = "rag"
    return " ".join(shlex.quote(a) for a in argv)


@dataclass
class Report:
    benchmark: str
    title: str
    command: str = field(default_factory=invocation)
    sections: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    directory: Path | None = None

    def folder(self, root: Path | None = None) -> Path:
        """This report's folder (created), under ``root`` or :func:`reports_root`."""
        if self.directory is None:
            root = root or reports_root()
            stamp = self.started_at.strftime("%Y%m%dT%H%M%SZ")
            self.directory = root / self.benchmark / stamp
            self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory

    def add(self, markdown: str) -> None:
        self.sections.append(markdown.strip())

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
        self.add("\n".join(lines))

    def write(self, root: Path | None = None) -> Path:
        folder = self.folder(root)
        facts = machine_facts()
        payload = {"benchmark": self.benchmark, "command": self.command,
                   "started_at": self.started_at.isoformat(), "machine": facts,
                   "results": self.results}
        (folder / "results.json").write_text(json.dumps(payload, indent=2, default=str))
        lines = [f"# {self.title}", "",
                 f"Command: `{self.command}`", "",
                 f"Run: {self.started_at.isoformat()} · commit {facts['git_commit'] or '-'}",
                 "", "Machine: " + f"{facts['cpu']}, {facts['logical_cores']} logical cores, "
                 f"{facts['memory_gib']} GiB, Python {facts['python']}; "
                 + ", ".join(f"{k} {v}" for k, v in facts["packages"].items()), ""]
        lines += [section + "\n" for section in self.sections]
        (folder / "report.md").write_text("\n".join(lines))
        return folder


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
