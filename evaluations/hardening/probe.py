"""Bad inputs tried through the product's front door, with the rows they leave behind.

Each probe runs one ``rag … --json`` command in a child process, exactly as a user would,
against the configured platform (the embedded default after ``scripts/main.sh``), inside a
fresh tenant that already holds a small, valid corpus and one answered question. Before and
after each probe it counts the tenant's rows (documents, chunks, rejected records, audit rows)
as the admin role, so the table shows both the typed code a caller saw and that nothing
stored was lost or duplicated. The tenant is deleted at the end unless asked to keep it.

Child processes rather than in-process calls: the point is what a user of the README
commands sees (one readable line, an exit code, a code in the JSON), tracebacks included.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.errors import BenchmarkError

_COUNTS = {
    "documents": "SELECT count(*) FROM rag.documents WHERE tenant_id = %s",
    "chunks": "SELECT count(*) FROM rag.chunks WHERE tenant_id = %s",
    "rejected": "SELECT count(*) FROM rag.ingestion_errors WHERE tenant_id = %s",
    "audit": "SELECT count(*) FROM rag.audit_log WHERE tenant_id = %s",
}


@dataclass(frozen=True)
class Probe:
    """One bad input: ``build`` writes its files into a folder and returns the CLI
    arguments (after ``rag``; ``{tenant}`` is replaced by the probe tenant)."""

    name: str
    build: Callable[[Path], list[str]]


@dataclass
class ProbeRow:
    name: str
    exit_code: int
    code: str | None
    before: dict[str, int]
    after: dict[str, int]
    message: str
    traceback_seen: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> dict[str, int]:
        return {key: self.after[key] - self.before[key] for key in self.before}


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _doc(doc_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"_id": doc_id, "title": f"title {doc_id}", "text": text, **extra}


def _good_corpus(folder: Path) -> list[str]:
    records = [_doc(f"good-{i}", f"Vitamin D level {i} relates to bone density in adults.")
               for i in range(3)]
    return ["ingest", str(_write_jsonl(folder / "good.jsonl", records)), "--tenant", "{tenant}"]


def _gzip_bomb(folder: Path) -> list[str]:
    path = folder / "bomb.jsonl.gz"
    line = json.dumps(_doc("bomb", "a" * (64 * 1024 * 1024))) + "\n"
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(line.encode())
    return ["ingest", str(path), "--tenant", "{tenant}"]


def _deep_json(folder: Path) -> list[str]:
    nested = "[" * 5000 + "]" * 5000
    path = folder / "deep.jsonl"
    path.write_text('{"_id": "deep", "text": "x", "metadata": ' + nested + "}\n",
                    encoding="utf-8")
    return ["ingest", str(path), "--tenant", "{tenant}"]


def _nul_title(folder: Path) -> list[str]:
    records = [_doc("nul", "text", title="bad\u0000title")]
    return ["ingest", str(_write_jsonl(folder / "nul.jsonl", records)), "--tenant", "{tenant}"]


def _corrupt_gz(folder: Path) -> list[str]:
    path = folder / "corrupt.jsonl.gz"
    good = gzip.compress((json.dumps(_doc("gz", "text")) + "\n").encode())
    path.write_bytes(good[: len(good) // 2])
    return ["ingest", str(path), "--tenant", "{tenant}"]


def _symlink_escape(folder: Path) -> list[str]:
    secret = folder / "secret.txt"
    secret.write_text("another tenant's file", encoding="utf-8")
    source = folder / "source"
    source.mkdir()
    (source / "fine.txt").write_text("A fine document.", encoding="utf-8")
    (source / "link.txt").symlink_to(secret)
    return ["ingest", str(source), "--tenant", "{tenant}"]


def _long_question(folder: Path) -> list[str]:
    return ["query", "why " * 2000, "--tenant", "{tenant}"]


def _nul_question(folder: Path) -> list[str]:
    # A NUL cannot travel in an argument vector: it comes in a questions file.
    path = folder / "nul.jsonl"
    path.write_text('{"id": "q1", "question": "vitamin\\u0000 D?"}\n'
                    '{"id": "q2", "question": "bone \\ud800 density?"}\n', encoding="utf-8")
    return ["batch", str(path), "--tenant", "{tenant}", "--out", str(folder / "out1.jsonl")]


def _too_many_questions(folder: Path) -> list[str]:
    path = _write_jsonl(folder / "many.jsonl",
                        [{"id": f"q{i}", "question": "vitamin D?"} for i in range(1001)])
    return ["batch", str(path), "--tenant", "{tenant}", "--out", str(folder / "out.jsonl")]


def _malformed_batch(folder: Path) -> list[str]:
    path = folder / "broken.jsonl"
    path.write_text('{"id": "q1", "question": "vitamin D?"}\n{"id": "q2", "quest\n',
                    encoding="utf-8")
    return ["batch", str(path), "--tenant", "{tenant}", "--out", str(folder / "out2.jsonl")]


def _duplicate_ids(folder: Path) -> list[str]:
    path = _write_jsonl(folder / "dupes.jsonl", [{"id": "q1", "question": "vitamin D?"},
                                                 {"id": "q1", "question": "bone density?"}])
    return ["batch", str(path), "--tenant", "{tenant}", "--out", str(folder / "out3.jsonl")]


def _bad_tenant(folder: Path) -> list[str]:
    return ["query", "vitamin D?", "--tenant", "tn_' OR 1=1 --"]


def _unknown_tenant(folder: Path) -> list[str]:
    return ["query", "vitamin D?", "--tenant", "tn_" + "0" * 31 + "9"]


PROBES: tuple[Probe, ...] = (
    Probe("gzip bomb (64 MiB line in one .gz)", _gzip_bomb),
    Probe("JSON nested 5,000 deep", _deep_json),
    Probe("NUL in a title", _nul_title),
    Probe("truncated .gz", _corrupt_gz),
    Probe("symlink leaving the source folder", _symlink_escape),
    Probe("question of 8,000 characters", _long_question),
    Probe("questions holding NUL, lone surrogate", _nul_question),
    Probe("batch of 1,001 questions", _too_many_questions),
    Probe("torn line in a batch file", _malformed_batch),
    Probe("two questions with one id", _duplicate_ids),
    Probe("malformed tenant id", _bad_tenant),
    Probe("unknown tenant", _unknown_tenant),
)


def _counts(admin_url: str, tenant: TenantId) -> dict[str, int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        counts: dict[str, int] = {}
        for name, sql in _COUNTS.items():
            row = conn.execute(sql, [tenant]).fetchone()
            counts[name] = int(row[0]) if row else 0
        return counts


def _run_cli(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([sys.executable, "-m", "rag_core.cli", *args, "--json"],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          check=False, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        payload = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        payload = {}
    return done.returncode, payload if isinstance(payload, dict) else {}, done.stderr


def _code_of(payload: dict[str, Any]) -> str | None:
    """The typed code a caller saw: the command's own, or the per-question codes of a batch
    that ran (its summary counts answers by code)."""
    if payload.get("code"):
        return str(payload["code"])
    if payload.get("error_code"):
        return str(payload["error_code"])
    errors = payload.get("errors")
    if isinstance(errors, dict) and errors:
        return ", ".join(f"{code} x{count}" for code, count in sorted(errors.items()))
    return None


def _last_rejection(admin_url: str, tenant: TenantId) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT reason FROM rag.ingestion_errors WHERE tenant_id = %s "
                           "ORDER BY error_id DESC LIMIT 1", [tenant]).fetchone()
    return f"rejected record: {str(row[0])[:70]}" if row else "rejected record"


def run_probes(settings: Settings, probes: Sequence[Probe] = PROBES, *,
               keep_tenant: bool = False) -> list[ProbeRow]:
    """Run ``probes`` in a fresh tenant of the platform ``settings`` points at."""
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="bad-input probe")
    env = dict(os.environ, RAG_STATE_DIR=str(settings.state_dir),
               RAG_EMBEDDED_DATABASE=settings.embedded_database)
    rows: list[ProbeRow] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rag-probe-") as tmp:
            folder = Path(tmp)
            # What must survive every probe: a small corpus and one audited question.
            for args in (_good_corpus(folder), ["query", "vitamin D?", "--tenant", tenant]):
                status, _, stderr = _run_cli([a.replace("{tenant}", tenant) for a in args], env)
                if status != 0:
                    raise BenchmarkError(f"the probe's set-up step `rag {args[0]}` failed: "
                                         f"{stderr.strip()[-300:]}", value=args)
            for number, probe in enumerate(probes):
                work = folder / f"p{number}"
                work.mkdir()
                args = [a.replace("{tenant}", tenant) for a in probe.build(work)]
                before = _counts(admin_url, tenant)
                exit_code, payload, stderr = _run_cli(args, env)
                after = _counts(admin_url, tenant)
                code = _code_of(payload)
                if code is None and after["rejected"] > before["rejected"]:
                    code = _last_rejection(admin_url, tenant)
                rows.append(ProbeRow(
                    name=probe.name, exit_code=exit_code, code=code,
                    before=before, after=after,
                    message=str(payload.get("message") or payload.get("error") or "")[:160],
                    traceback_seen="Traceback (most recent call last)" in stderr))
    finally:
        if not keep_tenant:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                tenant_admin.delete_tenant(conn, tenant)
    return rows


def as_markdown(rows: Sequence[ProbeRow]) -> str:
    """The rows as the table of the hardening issue's closing note."""
    head = ("| bad input | exit | code seen | documents | chunks | rejected | audit | "
            "traceback |\n|---|---|---|---|---|---|---|---|\n")

    def cell(row: ProbeRow, key: str) -> str:
        return f"{row.before[key]} → {row.after[key]}"

    return head + "".join(
        f"| {r.name} | {r.exit_code} | {r.code or '-'} | {cell(r, 'documents')} | "
        f"{cell(r, 'chunks')} | {cell(r, 'rejected')} | {cell(r, 'audit')} | "
        f"{'yes' if r.traceback_seen else 'no'} |\n" for r in rows)


def as_json(rows: Sequence[ProbeRow]) -> list[dict[str, Any]]:
    return [asdict(r) | {"delta": r.delta} for r in rows]
