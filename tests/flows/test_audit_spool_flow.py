"""The ``flush-audit-spool`` flow writes what waits in the spool, in the Prefect harness, and
its deployment runs it on a schedule."""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from prefect import Flow
from pydantic import SecretStr

from flows import _resources
from flows.audit_spool import flush_audit_spool
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.query.audit import AuditRecord
from tests.conftest import REPO_ROOT


@pytest.fixture()
def spool_platform(settings: Settings, db: Database, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The flows' per-process platform with a spool of this test's own."""
    own = settings.model_copy(update={"audit_spool_dir": tmp_path / "spool",
                                      "audit_hash_key": SecretStr(secrets.token_hex(32))})
    platform = Platform(own, database=db, start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)
    yield platform
    platform.close()


@pytest.mark.slow
def test_the_flow_flushes_the_spool(prefect_harness: None, spool_platform: Platform,
                                    make_tenant: Callable[[], TenantId],
                                    admin_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    tenant = make_tenant()
    records = [AuditRecord(tenant_id=tenant, kind="query", question_redacted="q?")
               for _ in range(3)]
    spool_platform.audit_log.spool(records)

    report = flush_audit_spool()

    assert report == {"flushed": 3, "quarantined": 0, "waiting": 0}
    row = admin_conn.execute("SELECT count(*) FROM rag.audit_log WHERE request_id = "
                             "ANY(%s::uuid[])", [[r.request_id for r in records]]).fetchone()
    assert row is not None and row[0] == 3


def test_the_deployment_runs_the_flow_every_ten_minutes_on_the_process_pool() -> None:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in config["deployments"] if d["name"] == "flush-audit-spool")
    module, _, name = deployment["entrypoint"].partition(":")
    target = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    assert isinstance(target, Flow) and target.name == "flush-audit-spool"
    assert [(s["interval"], s["active"]) for s in deployment["schedules"]] == [(600, True)]
    assert deployment["work_pool"]["name"] == "local-pool"
