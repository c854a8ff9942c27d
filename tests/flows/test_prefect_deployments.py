"""prefect.yaml's deployments: every flow has one, every parameter validates against its
flow, and (``rag prefect smoke``) they really run on a Prefect server with two workers that
split one ingestion job and store nothing twice."""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
import yaml  # type: ignore[import-untyped]
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import ObjectAlreadyExists
from prefect.flows import load_flow_from_entrypoint
from pydantic import BaseModel

from flows import _resources
from flows.ingest import WORKER_DEPLOYMENT, IngestParameters, ingest
from rag_core.common.processes import process_matches
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ops.prefect_smoke import POOL
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.serve_process import rag_command
from tests.conftest import REPO_ROOT, cli_environment
from tests.ingestion.conftest import scifact_records

PREFECT_YAML = REPO_ROOT / "prefect.yaml"
# Parameters a deployment leaves to each run (no sensible default): example values.
RUN_TIME_PARAMETERS: dict[str, dict[str, Any]] = {
    "ingest-worker": {"job_id": str(uuid4()), "tenant_id": "tn_" + "0" * 31 + "1"},
    "rollout": {"params": {"flag": "hybrid-retrieval"}},
}
SMOKE_DOCUMENTS = 400


def _deployments() -> list[dict[str, Any]]:
    document = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    deployments: list[dict[str, Any]] = document["deployments"]
    return deployments


def _flows_in_package() -> dict[str, str]:
    """Every flow object defined in flows/*.py: its entrypoint -> its name."""
    found = {}
    for path in sorted((REPO_ROOT / "flows").glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"flows.{path.stem}")
        for attribute, value in vars(module).items():
            if isinstance(value, Flow) and value.fn.__module__ == module.__name__:
                found[f"flows/{path.name}:{attribute}"] = value.name
    return found


def test_every_flow_in_the_package_has_a_deployment() -> None:
    deployed = {d["entrypoint"] for d in _deployments()}
    flows = _flows_in_package()
    assert {"flows/ingest.py:ingest", "flows/ingest.py:ingest_worker",
            "flows/batch_query.py:batch_query", "flows/audit_spool.py:flush_audit_spool",
            "flows/benchmark_embeddings.py:benchmark_embeddings",
            "flows/benchmark_index.py:benchmark_index", "flows/rollout.py:rollout"} <= set(flows)
    assert set(flows) - deployed == set(), "flows without a deployment in prefect.yaml"
    assert WORKER_DEPLOYMENT in {f"{flows[d['entrypoint']]}/{d['name']}"
                                 for d in _deployments()}


def test_every_deployment_uses_the_pool_anchor_of_the_smoke() -> None:
    document = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    anchors = document["definitions"]["work_pools"]
    assert {pool["name"] for pool in anchors.values()} == {POOL}
    assert {d["work_pool"]["name"] for d in _deployments()} == {POOL}
    names = [d["name"] for d in _deployments()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_deployment_parameters_validate_against_the_flow(
        deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # entrypoints are paths from the project folder
    flow: Flow[..., Any] = load_flow_from_entrypoint(deployment["entrypoint"],
                                                     use_placeholder_flow=False)
    given = deployment.get("parameters") or {}
    hints = typing.get_type_hints(flow.fn)
    accepted = set(flow.parameters.properties)
    assert set(given) <= accepted, f"unknown parameters {set(given) - accepted}"
    # A pydantic model ignores unknown fields: a misspelt key would vanish silently.
    for name, value in given.items():
        model = hints.get(name)
        if isinstance(model, type) and issubclass(model, BaseModel):
            assert set(value) <= set(model.model_fields), \
                f"{name}: unknown fields {set(value) - set(model.model_fields)}"
    values = given | RUN_TIME_PARAMETERS.get(deployment["name"], {})
    validated = flow.validate_parameters(values)
    assert set(validated) >= set(flow.parameters.required or [])


def test_every_deployment_trigger_validates_and_names_deployments_of_the_file() -> None:
    """What `prefect deploy` makes of each trigger (the automations it creates), and the
    deployments a trigger waits for exist here (a renamed one would silently never fire)."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    names = {d["name"] for d in _deployments()}
    for deployment in _deployments():
        for number, spec in enumerate(deployment.get("triggers") or [], start=1):
            TypeAdapter(DeploymentTriggerTypes).validate_python(
                {**spec, "name": f"{deployment['name']}__automation_{number}"})
            related = spec.get("match_related") or {}
            if related.get("prefect.resource.role") == "deployment":
                wanted = related["prefect.resource.name"]
                assert set([wanted] if isinstance(wanted, str) else wanted) <= names


def test_a_deployment_parameter_of_the_wrong_type_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a bad tenant id in the ingest defaults is caught."""
    from prefect.exceptions import ParameterTypeError

    monkeypatch.chdir(REPO_ROOT)
    flow: Flow[..., Any] = load_flow_from_entrypoint("flows/ingest.py:ingest",
                                                     use_placeholder_flow=False)
    with pytest.raises(ParameterTypeError):
        flow.validate_parameters({"params": {"source": "x.jsonl", "tenant_id": "tenant-1"}})


# --- the pool-worker path without any worker (in the session's test harness) ---------------
@pytest.fixture()
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    return folder


@pytest.fixture()
def rooted_platform(settings: Settings, db: Database, embedder: Embedder, sources: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    platform = Platform(settings.model_copy(update={"source_roots": (sources,)}), database=db,
                        embedder=embedder, start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)
    yield platform
    platform.close()


def _ensure_worker_deployment() -> None:
    """The ingest-worker deployment on the harness's API, on a pool no worker serves."""
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name="unserved-pool", type="process"))
        flow_id = client.create_flow_from_name("ingest-worker")
        client.create_deployment(flow_id=flow_id, name="ingest-worker",
                                 work_pool_name="unserved-pool",
                                 entrypoint="flows/ingest.py:ingest_worker")


@pytest.mark.slow
def test_pool_workers_no_worker_takes_are_cancelled_and_the_run_does_the_job(
        prefect_harness: None, rooted_platform: Platform, make_tenant: Callable[[], TenantId],
        sources: Path) -> None:
    _ensure_worker_deployment()
    tenant = make_tenant()
    source = sources / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(5, start=700)),
                      encoding="utf-8")
    state = ingest(IngestParameters(source=str(source), tenant_id=tenant, pool_workers=1),
                   return_state=True)
    result = state.result()
    assert (result["status"], result["ingested"], result["pending"]) == ("succeeded", 5, 0)
    [helper] = result["pool_workers"]
    assert (helper["state"], helper["worker"]) == ("CANCELLED", None)
    assert sum(w["items"] for w in result["workers"]) == 5
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    [share] = [json.loads(str(a.data)) for a in artifacts if a.type == "table"]
    assert (share[0]["items"], share[0]["ingested"]) == (5, 5)
    assert share[0]["chunks_written"] == result["chunks"]


# --- the deployments on a real server with two workers ---------------------------------------
@pytest.mark.slow
def test_rag_prefect_smoke_splits_one_job_between_two_workers_and_stores_nothing_twice(
        settings: Settings, redis_server: EmbeddedRedis, embedder: Embedder) -> None:
    env = cli_environment(RAG_STATE_DIR=str(settings.state_dir),
                          RAG_EMBEDDED_DATABASE=settings.embedded_database,
                          # finer batches: the tail of the job is shared more evenly
                          RAG_INGEST_CLAIM_BATCH="16")
    done = subprocess.run([*rag_command(), "prefect", "smoke", "--json", "--keep-tenant",
                           "--documents", str(SMOKE_DOCUMENTS), "--timeout", "600"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=880,
                          check=False)
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    tenant = report.get("tenant_id")
    try:
        assert done.returncode == 0, (report, done.stderr[-2000:])
        assert report["ok"] is True and report["problems"] == []
        shares = {share["worker"]: share for share in report["workers"]}
        assert set(shares) == {"smoke-worker-1", "smoke-worker-2"}
        assert all(share["items"] > 0 and share["chunks"] > 0 for share in shares.values())
        assert {run["deployment"] for run in report["flow_runs"]} == {"ingest", "ingest-worker"}
        assert {run["worker"] for run in report["flow_runs"]} == set(shares)
        assert sum(share["items"] for share in shares.values()) == SMOKE_DOCUMENTS
        assert report["job"]["status"] == "succeeded"
        assert report["job"]["read"] == report["job"]["ingested"] == SMOKE_DOCUMENTS
        assert report["duplicates"] == 0
        # The database, asked here rather than through the smoke's own queries.
        stored = _stored(settings, tenant)
        assert stored["documents"] == stored["sources"] == SMOKE_DOCUMENTS
        assert stored["chunks"] == stored["distinct_chunks"] == stored["vectors"] \
            == sum(share["chunks"] for share in shares.values()) == report["job"]["chunks"]
        # Server, workers and flow-run processes: all gone.
        assert len(report["processes"]) >= 2 + len(shares)
        assert [pid for pid in report["processes"] if process_matches(pid, "prefect")] == []
    finally:
        if tenant:
            with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
                tenant_admin.delete_tenant(conn, tenant)


def _stored(settings: Settings, tenant: str) -> dict[str, int]:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM rag.documents WHERE tenant_id = %(t)s),"
            " (SELECT count(DISTINCT source_uri) FROM rag.documents WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM rag.chunks WHERE tenant_id = %(t)s),"
            " (SELECT count(DISTINCT (d.source_uri, c.ordinal)) FROM rag.chunks c"
            "    JOIN rag.documents d USING (document_id) WHERE c.tenant_id = %(t)s),"
            " (SELECT count(*) FROM rag.chunk_embeddings WHERE tenant_id = %(t)s)",
            {"t": tenant}).fetchone()
    assert row is not None
    return dict(zip(("documents", "sources", "chunks", "distinct_chunks", "vectors"),
                    map(int, row), strict=True))
