"""``rag bench load``: ``rag serve`` (2 workers) on 127.0.0.1 under wrk, end to end.

One run: a fresh tenant with SciFact abstracts ingested the platform's way and an API key;
the fake LLM at a fixed latency (the numbers describe the service, not a provider);
``rag serve`` as a child process; a warm-up that answers M distinct claims (filling the
answer cache) and checks each is then served cached; a cached phase (wrk cycling the warmed
claims) and a shorter uncached phase (every question new: embedding, retrieval, LLM). Then
the audit: the service's own count of the queries it answered against the tenant's audit
rows once the workers' buffered writers have delivered them. The tenant, its key and its
Redis keys are deleted at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import psutil

from evaluations.common.beir import (
    corpus_path,
    load_queries,
    queries_path,
    read_documents,
    write_jsonl,
)
from evaluations.load import service as svc
from evaluations.load.config import LoadBenchConfig
from evaluations.load.results import LoadBenchResult
from evaluations.load.wrk import cached_script, run_wrk, uncached_script, wrk_version
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import scifact_dir
from rag_core.db import tenant_admin
from rag_core.errors import BenchmarkError
from rag_testing.fake_groq import FakeGroqServer, answering_after
from rag_testing.serve_process import ServeProcess

__all__ = ["run_load_benchmark"]

Note = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default progress sink: says nothing."""


def _ingest_tenant(platform: Platform, docs: int, work_dir: Path) -> TenantId:
    with platform.admin_connection() as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="load benchmark")
    try:
        records = read_documents(corpus_path(scifact_dir()), docs)
        source = write_jsonl(work_dir / "corpus.jsonl", records)
        platform.ingestion.run(tenant, source, workers=1, resume=False)
    except BaseException:
        _drop_tenant(platform, tenant, None)
        raise
    return tenant


def _drop_tenant(platform: Platform, tenant: TenantId, key_prefix: str | None) -> None:
    """The tenant's rows (its API key with them), then its keys under the run's prefix."""
    with platform.admin_connection() as conn:
        tenant_admin.delete_tenant(conn, tenant)
    if key_prefix is None:
        return
    scoped = platform.settings.model_copy(update={"redis_key_prefix": key_prefix})
    with Platform(scoped, database=platform.database, start_services=False) as keys, \
            contextlib.suppress(Exception):  # a cache left to expire is no failure
        keys.tenant_keys.purge(tenant)


def _claims(count: int) -> list[str]:
    """The first ``count`` distinct SciFact claims."""
    claims = list(dict.fromkeys(load_queries(queries_path(scifact_dir())).values()))
    if len(claims) < count:
        raise BenchmarkError(f"SciFact has {len(claims)} distinct claims, fewer than the "
                             f"{count} warm questions asked for", value=count)
    return claims[:count]


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def run_load_benchmark(platform: Platform, config: LoadBenchConfig, work_dir: Path, *,
                       note: Note = _quiet) -> LoadBenchResult:
    """One run of ``config`` over the servers ``platform`` points at; ``work_dir`` holds
    the corpus file, the Lua scripts and the service's audit spool."""
    version = wrk_version()  # no wrk: fail before any set-up
    load_before = os.getloadavg()[0]
    settings = platform.settings
    prefix = f"load{secrets.token_hex(4)}"
    note(f"ingesting {config.docs} SciFact abstracts into a fresh tenant")
    tenant = _ingest_tenant(platform, config.docs, work_dir)
    try:
        key = platform.api_keys.create(tenant, "load-bench").key
        questions = _claims(config.warm_questions)
        with FakeGroqServer(default=answering_after(config.llm_latency_ms / 1000)) as llm:
            env = svc.service_environment(settings, llm_base_url=llm.base_url,
                                          key_prefix=prefix, spool_dir=work_dir / "spool")
            note(f"starting rag serve --workers {config.workers}")
            with ServeProcess(env, workers=config.workers) as service:
                note(f"warming the cache with {len(questions)} questions")
                warm_requests, warm_failures = svc.warm_up(
                    service.url, key, questions, concurrency=config.warm_concurrency)
                cached_lua = work_dir / "cached.lua"
                cached_lua.write_text(cached_script(questions, key))
                uncached_lua = work_dir / "uncached.lua"
                uncached_lua.write_text(uncached_script(key, secrets.token_hex(4)))
                workers = service.worker_pids()
                note(f"cached phase: {config.connections} connections, "
                     f"{config.cached_duration_s} s")
                cpu_before = _cpu_s(workers)
                cached = run_wrk(service.url, cached_lua, threads=config.wrk_threads,
                                 connections=config.connections,
                                 duration_s=config.cached_duration_s,
                                 timeout_s=config.request_timeout_s)
                server_cpu_s = _cpu_s(workers) - cpu_before
                note(f"uncached phase: {config.uncached_connections} connections, "
                     f"{config.uncached_duration_s} s")
                uncached = run_wrk(service.url, uncached_lua, threads=config.wrk_threads,
                                   connections=config.uncached_connections,
                                   duration_s=config.uncached_duration_s,
                                   timeout_s=config.request_timeout_s)
                served = svc.wait_until_served_settles(service.url)
                completed = cached.requests + uncached.requests + warm_requests
                expected = max(served, completed)
                note(f"waiting for {expected} audit rows")
                written = svc.wait_for_audit(settings, tenant, expected)
            if written < expected:  # the workers' final flush runs as they stop
                written = svc.wait_for_audit(settings, tenant, expected, timeout_s=30)
    finally:
        _drop_tenant(platform, tenant, prefix)
    return LoadBenchResult(config=config, cached=cached, uncached=uncached,
                           warmup_requests=warm_requests, warmup_failures=warm_failures,
                           queries_served=served, audit_rows_written=written,
                           server_cpu_s=server_cpu_s, wrk_version=version,
                           load_average_before=load_before)
