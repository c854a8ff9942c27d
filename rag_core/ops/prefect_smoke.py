"""``rag prefect smoke``: ``prefect.yaml``'s deployments on a real Prefect server, one
ingestion job split between two workers, checked from the evidence.

The path an operator takes, on a private server (:class:`LocalPrefect`): create the process
work pool, ``prefect deploy --all``, start the workers (each takes one flow run at a time,
as an ingestion worker on its own machine would), then run the ``ingest`` deployment on the
first documents of the shipped SciFact corpus with ``pool_workers`` set, so the ``ingest``
run plans the job and submits ``ingest-worker`` runs for it, which the other workers pick up.
Then it asks the witnesses (``rag_core.ops.ingest_evidence``): which worker ran which flow
run (the Prefect API), what each processed (their artifacts), what was stored (PostgreSQL).

The workers inherit ``env`` (the settings this process read): they reach the same database
and Redis, as workers on other machines would through ``DATABASE_URL`` and ``REDIS_URL``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_core.common.tenancy import TenantId
from rag_core.config import scifact_dir
from rag_core.db.pool import Database
from rag_core.errors import ConfigurationError, EmbeddedServerError
from rag_core.ingestion.jobs import summarize
from rag_core.ops.ingest_evidence import (
    StoredCounts,
    WorkerShare,
    job_ids,
    stored_counts,
    worker_shares,
)
from rag_core.ops.prefect_local import LocalPrefect

#: The work pool of prefect.yaml's deployments (``definitions.work_pools.process_pool``).
POOL = "local-pool"
INGEST_DEPLOYMENT = ("ingest", "ingest")
#: The SciFact corpus has 5,183 documents (data/scifact/PROVENANCE.md).
MAX_DOCUMENTS = 5183
_FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


@dataclass(frozen=True)
class SmokeOptions:
    # Enough that the ``ingest`` run is still busy when the other worker's run has started
    # (a flow run process takes 10-30 s to start on a busy 2-core machine).
    documents: int = 600
    workers: int = 2
    timeout_s: float = 900.0


@dataclass
class SmokeReport:
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    workers: list[WorkerShare] = field(default_factory=list)
    flow_runs: list[dict[str, Any]] = field(default_factory=list)
    job: dict[str, Any] = field(default_factory=dict)
    stored: StoredCounts | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    processes: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def duplicates(self) -> int | None:
        return None if self.stored is None else self.stored.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems,
                "workers": [share.as_dict() for share in self.workers],
                "flow_runs": self.flow_runs, "job": self.job,
                "stored": self.stored.as_dict() if self.stored else None,
                "duplicates": self.duplicates, "phases_s": self.phases_s,
                "processes": self.processes, "elapsed_s": self.elapsed_s}


def project_dir(given: Path | None = None) -> Path:
    """The folder holding ``prefect.yaml`` and ``flows/``: ``given``, else this checkout."""
    folder = (given or Path(__file__).resolve().parents[2]).resolve()
    if not (folder / "prefect.yaml").is_file() or not (folder / "flows").is_dir():
        raise ConfigurationError("--project", str(folder),
                                 "no prefect.yaml and flows/ there: name the project folder")
    return folder


def write_corpus_head(target: Path, documents: int) -> int:
    """The first ``documents`` records of the shipped SciFact corpus, as a .jsonl; how many."""
    if not 1 <= documents <= MAX_DOCUMENTS:
        raise ConfigurationError("--documents", documents, f"between 1 and {MAX_DOCUMENTS}")
    written = 0
    with gzip.open(scifact_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as source, \
            target.open("w", encoding="utf-8") as out:
        for line in source:
            if written == documents:
                break
            out.write(line)
            written += 1
    return written


def run_prefect_smoke(db: Database, tenant: TenantId, *, project: Path,
                      env: Mapping[str, str], source_roots: Sequence[Path],
                      options: SmokeOptions | None = None) -> SmokeReport:
    """Run the scenario for ``tenant`` (empty, owned by the caller); the report says what
    happened and, in ``problems``, every check that failed."""
    options = options or SmokeOptions()
    started = time.perf_counter()
    report = SmokeReport()
    sources = Path(tempfile.mkdtemp(prefix="rag-prefect-smoke-"))
    try:
        corpus = sources / "corpus.jsonl"
        write_corpus_head(corpus, options.documents)
        child_env = dict(env) | {
            "RAG_PROJECT_DIR": str(project),
            # The flows read a source only under their roots: this one too, for this run.
            "RAG_SOURCE_ROOTS": json.dumps([str(root) for root in source_roots]
                                           + [str(sources)])}
        with LocalPrefect(child_env) as prefect:
            report.phases_s["server"] = _since(started)
            try:
                _run(prefect, report, project, options, corpus, tenant)
            finally:
                report.processes = prefect.pids()
        _check(db, tenant, report, options)
    finally:
        shutil.rmtree(sources, ignore_errors=True)
        report.elapsed_s = _since(started)
    report.ok = not report.problems
    return report


def _run(prefect: LocalPrefect, report: SmokeReport, project: Path, options: SmokeOptions,
         corpus: Path, tenant: TenantId) -> None:
    mark = time.perf_counter()
    prefect.cli("work-pool", "create", POOL, "--type", "process")
    prefect.cli("--no-prompt", "deploy", "--all", cwd=project)
    report.phases_s["deploy"] = _since(mark)
    mark = time.perf_counter()
    names = [f"smoke-worker-{number}" for number in range(1, options.workers + 1)]
    for name in names:
        # One flow run at a time each: as ingestion workers on machines of their own.
        prefect.start_worker(POOL, name, limit=1, work_queues=["default"])
    _wait_online(prefect, names, timeout_s=options.timeout_s)
    report.phases_s["workers"] = _since(mark)
    mark = time.perf_counter()
    deployment = prefect.get("/deployments/name/{}/{}".format(*INGEST_DEPLOYMENT))
    run = prefect.post(f"/deployments/{deployment['id']}/create_flow_run", {
        "name": "prefect-smoke-ingest", "idempotency_key": f"prefect-smoke-{tenant}",
        # The helpers get time to start their flow-run processes before the ingest run
        # starts its own share: on a fast machine it could otherwise finish the job alone.
        "parameters": {"params": {"source": str(corpus), "tenant_id": tenant, "workers": 1,
                                  "pool_workers": options.workers - 1,
                                  "pool_start_wait_s": min(options.timeout_s, 180)}}})
    final = _wait_final(prefect, run["id"], timeout_s=options.timeout_s)
    report.phases_s["ingest"] = _since(mark)
    children = prefect.post("/flow_runs/filter", {
        "flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    runs = [final, *children]
    artifacts = prefect.post("/artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [r["id"] for r in runs]}}})
    deployments = {d: prefect.get(f"/deployments/{d}")["name"]
                   for d in {r["deployment_id"] for r in runs if r.get("deployment_id")}}
    report.flow_runs = [{"name": r["name"], "deployment": deployments.get(r["deployment_id"]),
                         "state": r.get("state_type"),
                         "worker": (r.get("labels") or {}).get("prefect.worker.name")}
                        for r in runs]
    report.workers = worker_shares(runs, artifacts)
    not_completed = [r for r in report.flow_runs if r["state"] != "COMPLETED"]
    if not_completed:
        report.problems.append(f"flow runs not completed: {not_completed}; "
                               + " | ".join(f"{n}: {prefect.log_tail(f'worker-{n}')[-400:]}"
                                            for n in names))


def _check(db: Database, tenant: TenantId, report: SmokeReport,
           options: SmokeOptions) -> None:
    jobs = job_ids(db, tenant)
    if len(jobs) != 1:
        report.problems.append(f"expected one ingestion job for the tenant, found {len(jobs)}")
        return
    summary = summarize(db, tenant, jobs[0])
    report.job = summary.as_dict()
    stored = report.stored = stored_counts(db, tenant)
    problems = report.problems
    if summary.status != "succeeded" or not summary.balanced or summary.pending:
        problems.append(f"job did not succeed in full: {report.job}")
    if summary.read != options.documents:
        problems.append(f"job read {summary.read} documents, not {options.documents}")
    idle = [share.worker for share in report.workers if share.items == 0]
    busy = [share.worker for share in report.workers if share.items > 0]
    if len(busy) != options.workers:
        problems.append(f"{len(busy)} of {options.workers} workers processed items "
                        f"(busy: {busy}, idle: {idle})")
    items = sum(share.items for share in report.workers)
    processed = summary.ingested + summary.duplicate + summary.failed
    if items != processed:
        problems.append(f"the workers' shares add up to {items} items, the job has "
                        f"{processed}: an item was processed twice or by nobody")
    chunks = sum(share.chunks for share in report.workers)
    if not chunks == stored.chunk_rows == summary.chunks:
        problems.append(f"chunks: {chunks} by the workers' accounts, {stored.chunk_rows} "
                        f"stored, {summary.chunks} in the job")
    if stored.duplicates:
        problems.append(f"{stored.duplicates} rows stored more than once: {stored.as_dict()}")


def _wait_online(prefect: LocalPrefect, names: list[str], *, timeout_s: float) -> None:
    """Until every worker has told the server it polls ``POOL``."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = prefect.post(f"/work_pools/{POOL}/workers/filter", {})
        online = {w["name"] for w in workers if w.get("status") == "ONLINE"}
        if online >= set(names):
            return
        if time.monotonic() > deadline:
            raise _timeout(prefect, f"workers online: {sorted(online)} of {names}", timeout_s)
        time.sleep(0.5)


def _wait_final(prefect: LocalPrefect, run_id: str, *, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        prefect.track()  # flow run processes, so none can outlive the smoke
        run: dict[str, Any] = prefect.get(f"/flow_runs/{run_id}")
        if run.get("state_type") in _FINAL:
            return run
        if time.monotonic() > deadline:
            raise _timeout(prefect, f"flow run {run['name']} still {run.get('state_type')}",
                           timeout_s)
        time.sleep(1.0)


def _timeout(prefect: LocalPrefect, what: str, timeout_s: float) -> EmbeddedServerError:
    return EmbeddedServerError("Prefect server", str(prefect.home),
                               f"not within {timeout_s} s: {what}")


def _since(mark: float) -> float:
    return round(time.perf_counter() - mark, 1)
