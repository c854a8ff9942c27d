"""The ``ingest`` Prefect flow runs the real ingestion path and resumes rather than redoes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flows.ingest import IngestParameters, ingest
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from tests.ingestion.conftest import scifact_records


@pytest.mark.slow
def test_ingest_flow_ingests_then_finds_duplicates(
        prefect_harness: None, flow_platform: Platform, make_tenant: Callable[[], TenantId],
        write_jsonl: Callable[..., Path]) -> None:
    tenant = make_tenant()
    source = write_jsonl(scifact_records(6, start=500))
    params = IngestParameters(source=str(source), tenant_id=tenant, workers=2)
    first = ingest(params)
    assert (first["status"], first["read"], first["ingested"]) == ("succeeded", 6, 6)
    assert first["balanced"] is True
    assert sum(w["items"] for w in first["workers"]) == 6
    second = ingest(params)
    assert (second["ingested"], second["duplicate"]) == (0, 6)


def test_parameters_reject_a_malformed_tenant() -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        IngestParameters(source="x", tenant_id="tn_nope")
