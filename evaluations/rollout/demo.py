"""``rag rollout demo``: two canary rollouts on the embedded default, against the fake LLM
server, with generated traffic through the real query path.

- *healthy*: a flag that switches its cohort to the retrieval mode that is not the default
  (dense, while hybrid is). Gates pass at every stage and the flag completes at 100 %.
- *faulty*: a flag that switches its cohort to prompt ``batch-qa-v2``, which the fake LLM
  answers with HTTP 500 (an injected fault, as a broken prompt or model version would be).
  The canary's error rate fails the first gate and the flag is rolled back to 0 %.

Each rollout is the product's own loop (:func:`rag_core.ops.rollout.runner.run_rollout`
over :class:`~rag_core.ops.rollout.controller.Rollouts`), with a short soak and a traffic
floor that the generated traffic reaches in seconds. The generator asks as many questions
from canary tenants as from control tenants (real traffic is not that kind; it keeps the
demo short), one question at a time, each through ``QueryService.ask`` with its audit row.
The demo's tenants are deleted at the end; its flags stay, with their history, under
names carrying the run's timestamp.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from evaluations.common.beir import (
    Document,
    corpus_path,
    load_queries,
    queries_path,
    read_documents,
    write_jsonl,
)
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import LLMSettings, RateLimitPolicy, RetryPolicy, Settings, scifact_dir
from rag_core.config.rollout import RolloutPolicy
from rag_core.db import tenant_admin
from rag_core.db.flag_cohorts import Flag
from rag_core.embeddings.registry import ensure_models
from rag_core.errors import RolloutRolledBackError
from rag_core.ops import services
from rag_core.ops.rollout.runner import run_rollout
from rag_testing.fake_groq import (
    FakeGroqServer,
    FakeResponse,
    RecordedRequest,
    answering_responder,
    error_response,
)

__all__ = ["DemoConfig", "run_rollout_demo"]

Note = Callable[[str], None]
V2_MARKER = "Supported, Contradicted or Unaddressed"  # only prompt batch-qa-v2 says it


class DemoConfig:
    """The demo's size: tenants, abstracts per tenant, soak seconds, traffic floor."""

    def __init__(self, *, tenants: int = 40, docs_per_tenant: int = 8, soak_s: float = 3.0,
                 min_requests: int = 20, max_hold_s: float = 120.0) -> None:
        self.tenants = tenants
        self.docs_per_tenant = docs_per_tenant
        self.policy = RolloutPolicy(soak_s=soak_s, min_requests=min_requests,
                                    max_hold_s=max_hold_s)


def _faulty_v2(request: RecordedRequest) -> FakeResponse:
    """Prompt v2 fails (HTTP 500); every other prompt is answered correctly."""
    system = str(request.messages[0].get("content", "")) if request.messages else ""
    if V2_MARKER in system:
        return error_response(500, "injected fault: this prompt version breaks the model")
    return answering_responder(request)


def _demo_settings(settings: Settings, llm_url: str, run: str) -> Settings:
    return settings.model_copy(update={
        "llm": LLMSettings(api_key=SecretStr("rollout-demo"), base_url=llm_url,
                           model="demo-model", timeout_s=5.0),
        "retry": RetryPolicy(attempts=1),  # the injected fault is not transient
        "redis_key_prefix": f"rag-demo-{run}",  # nothing cached by, or for, anyone else
        "flag_cache_ttl_s": 0.2,
        "rate_limit": RateLimitPolicy(requests_per_minute=10**6, tokens_per_day=10**12)})


class _Traffic:
    """Questions from canary and control tenants of the flag being rolled out, in turn."""

    def __init__(self, platform: Platform, tenants: list[TenantId], questions: list[str]):
        self._platform = platform
        self._tenants = tenants
        self._questions = questions
        self._flag: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self.asked = 0
        self.failed_calls = 0

    def follow(self, flag: str | None) -> None:
        self._flag = flag

    @contextlib.contextmanager
    def running(self) -> Iterator[_Traffic]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=60)

    def _cohorts(self) -> tuple[list[TenantId], list[TenantId]]:
        flags = {f.name: f for f in self._platform.flags.all()}
        flag: Flag | None = flags.get(self._flag or "")
        if flag is None:
            return [], list(self._tenants)
        canary = [t for t in self._tenants if flag.reaches(t)]
        return canary, [t for t in self._tenants if t not in canary]

    def _run(self) -> None:
        rng = random.Random(7)
        service = self._platform.query_service
        while not self._stop.is_set():
            canary, control = self._cohorts()
            for group in (canary, control):
                if not group or self._stop.is_set():
                    continue
                try:
                    service.ask(rng.choice(group), rng.choice(self._questions))
                except Exception:  # audited by the service; the generator goes on
                    self.failed_calls += 1
                self.asked += 1


def _tenants(platform: Platform, count: int, docs: int, work_dir: Path,
             note: Note) -> list[TenantId]:
    records = read_documents(corpus_path(scifact_dir()), count * docs)
    tenants: list[TenantId] = []
    for i in range(count):
        with platform.admin_connection() as conn:
            tenants.append(tenant_admin.create_tenant(conn, display_name="rollout demo"))
        source = write_jsonl(work_dir / f"t{i}.jsonl", records[i * docs:(i + 1) * docs])
        platform.ingestion.run(tenants[-1], source, workers=1, resume=False)
    note(f"{count} tenants with {docs} SciFact abstracts each")
    return tenants


def _first_stage_reached(platform: Platform, flags: list[Flag], tenants: list[TenantId],
                         work_dir: Path, records: list[Document], note: Note) -> None:
    """Add tenants until every flag's first stage reaches at least one of them.

    A stage reaches the tenants whose bucket (a keyed hash) is below its percentage: at 5 %
    of 40 tenants none at all one time in eight, and the stage would hold on no traffic
    until the rollout paused. A real rollout waits for a person then; the demo instead adds
    a tenant (with the same abstracts) that falls into the empty cohort, so it shows both
    outcomes on every run. A tenant that falls into no empty cohort is deleted at once."""
    for flag in flags:
        first = flag.stages[0]
        while not any(flag.bucket(t) < first for t in tenants):
            with platform.admin_connection() as conn:
                tenant = tenant_admin.create_tenant(conn, display_name="rollout demo")
                if flag.bucket(tenant) >= first:
                    tenant_admin.delete_tenant(conn, tenant)
                    continue
            source = write_jsonl(work_dir / f"t{len(tenants)}.jsonl", records)
            platform.ingestion.run(tenant, source, workers=1, resume=False)
            tenants.append(tenant)
            note(f"added a tenant so that {flag.name}'s {first} % stage reaches one")


def _one_rollout(platform: Platform, traffic: _Traffic, name: str,
                 policy: RolloutPolicy, note: Note) -> dict[str, Any]:
    variant = dict(platform.flags.get(name).variant)
    rollouts = platform.rollouts(policy, actor="rag rollout demo")
    traffic.follow(name)
    steps = rollouts.steps(name)
    try:
        summary = run_rollout(name, policy, steps)
    except RolloutRolledBackError as rolled_back:
        summary = dict(rolled_back.summary)
        last = summary["decisions"][-1]
        summary["failed_gate"] = rolled_back.gate
        summary["canary"] = last["measured"]["canary"]
        summary["control"] = last["measured"]["control"]
    finally:
        traffic.follow(None)
    summary["variant"] = variant
    summary["history"] = [e.as_dict() for e in reversed(platform.flags.history(name))]
    note(f"{name}: {summary['outcome']} at {summary['final_percentage']} % "
         f"(stages passed {summary['stages_passed']})")
    return summary


def run_rollout_demo(settings: Settings, config: DemoConfig | None = None, *,
                     note: Note = lambda _m: None) -> dict[str, Any]:
    """Run both rollouts; returns ``{"healthy": …, "faulty": …}`` and the run's figures."""
    config = config or DemoConfig()
    # What `rag setup` does (idempotent): the demo runs from a fresh clone too.
    services.start_services(settings)
    services.upgrade_database(settings)
    ensure_models(settings.state_dir)
    run = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
    started = time.perf_counter()
    questions = list(dict.fromkeys(load_queries(queries_path(scifact_dir())).values()))[:60]
    other = "dense" if settings.retrieval_mode == "hybrid" else "hybrid"
    with FakeGroqServer(default=_faulty_v2) as fake, \
            Platform(_demo_settings(settings, fake.base_url, run)) as platform, \
            tempfile.TemporaryDirectory(prefix="rag-rollout-demo-") as folder:
        flags = [platform.flags.create(name, variant, description="rollout demo",
                                       stages=config.policy.stages)
                 for name, variant in ((f"demo-{other}-{run}", {"retrieval_mode": other}),
                                       (f"demo-prompt-v2-{run}",
                                        {"prompt_version": "batch-qa-v2"}))]
        tenants = _tenants(platform, config.tenants, config.docs_per_tenant, Path(folder),
                           note)
        try:
            _first_stage_reached(platform, flags, tenants, Path(folder),
                                 read_documents(corpus_path(scifact_dir()),
                                                config.docs_per_tenant), note)
            with _Traffic(platform, tenants, questions).running() as traffic:
                healthy = _one_rollout(platform, traffic, flags[0].name, config.policy, note)
                faulty = _one_rollout(platform, traffic, flags[1].name, config.policy, note)
            asked = traffic.asked
        finally:
            with platform.admin_connection() as conn:
                for tenant in tenants:
                    tenant_admin.delete_tenant(conn, tenant)
            with contextlib.suppress(Exception):  # the demo's cache keys expire anyway
                for tenant in tenants:
                    platform.tenant_keys.purge(tenant)
        llm_calls = fake.request_count
    return {"healthy": healthy, "faulty": faulty, "tenants": len(tenants),
            "questions_asked": asked, "llm_calls": llm_calls,
            "elapsed_s": round(time.perf_counter() - started, 1)}
