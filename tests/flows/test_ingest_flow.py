"""The ``ingest`` Prefect flow runs the real ingestion path, resumes rather than redoes, and
reads only sources under ``RAG_SOURCE_ROOTS``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect.states import exception_to_failed_state

from flows import _resources
from flows._resources import retry_unless_refused
from flows.ingest import IngestParameters, ingest
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import DatabaseUnavailableError, PathOutsideRootsError, SourceError
from tests.ingestion.conftest import scifact_records


@pytest.fixture()
def sources(tmp_path: Path) -> Path:
    """The one source root of these tests (tmp_path itself is outside it)."""
    folder = tmp_path / "sources"
    folder.mkdir()
    return folder


@pytest.fixture()
def rooted_platform(settings: Settings, db: Database, embedder: Embedder, sources: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The flows' per-process platform with ``sources`` as its only source root."""
    platform = Platform(settings.model_copy(update={"source_roots": (sources,)}), database=db,
                        embedder=embedder, start_services=False)
    monkeypatch.setattr(_resources, "_platform", platform)
    yield platform
    platform.close()


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _rows(db: Database, tenant: TenantId) -> dict[str, int]:
    with db.tenant_session(tenant) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM rag.documents), (SELECT count(*) FROM rag.chunks), "
            "(SELECT count(*) FROM rag.ingestion_jobs), "
            "(SELECT count(*) FROM rag.ingestion_items)").fetchone()
    assert row is not None
    return dict(zip(("documents", "chunks", "jobs", "items"), row, strict=True))


@pytest.mark.slow
def test_ingest_flow_ingests_then_finds_duplicates(
        prefect_harness: None, rooted_platform: Platform, make_tenant: Callable[[], TenantId],
        sources: Path) -> None:
    tenant = make_tenant()
    source = _write(sources / "corpus.jsonl", scifact_records(6, start=500))
    params = IngestParameters(source=str(source), tenant_id=tenant, workers=2)
    first = ingest(params)
    assert (first["status"], first["read"], first["ingested"]) == ("succeeded", 6, 6)
    assert first["balanced"] is True
    assert sum(w["items"] for w in first["workers"]) == 6
    second = ingest(params)
    assert (second["ingested"], second["duplicate"]) == (0, 6)


@pytest.mark.slow
def test_ingest_flow_refuses_sources_outside_the_roots_and_ingests_nothing(
        prefect_harness: None, rooted_platform: Platform, make_tenant: Callable[[], TenantId],
        db: Database, sources: Path, tmp_path: Path) -> None:
    tenant = make_tenant()
    _write(sources / "mine.jsonl", scifact_records(2, start=700))
    ingest(IngestParameters(source=str(sources / "mine.jsonl"), tenant_id=tenant))
    before = _rows(db, tenant)
    assert before["documents"] == 2
    outside = _write(tmp_path / "other-tenant" / "corpus.jsonl", scifact_records(3, start=800))
    (sources / "link.jsonl").symlink_to(outside)
    (sources / "folder-link").symlink_to(outside.parent, target_is_directory=True)
    for source in [str(outside), f"{sources}/../other-tenant/corpus.jsonl",
                   str(sources / "link.jsonl"), str(sources / "folder-link"),
                   "/etc/hostname"]:
        with pytest.raises(PathOutsideRootsError) as caught:
            ingest(IngestParameters(source=source, tenant_id=tenant))
        assert caught.value.path == source
        assert caught.value.roots == [str(sources)]
        assert _rows(db, tenant) == before  # no job, no item, no document
    # A folder inside the roots holding a link out is refused by the reader (as in the CLI).
    folder = sources / "mixed"
    _write(folder / "ok.jsonl", scifact_records(1, start=900))
    (folder / "pulled.jsonl").symlink_to(outside)
    with pytest.raises(SourceError, match="outside the source folder"):
        ingest(IngestParameters(source=str(folder), tenant_id=tenant))
    assert _rows(db, tenant) == before


def test_parameters_reject_a_malformed_tenant() -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        IngestParameters(source="x", tenant_id="tn_nope")


def test_tasks_retry_transient_failures_but_not_refused_inputs() -> None:
    # A path outside the roots is outside on every attempt: retrying it only delays the
    # error (the plan task would wait 5 + 30 s before failing).
    refused = asyncio.run(exception_to_failed_state(
        PathOutsideRootsError("/etc/passwd", ["/srv/sources"], "RAG_SOURCE_ROOTS", "is outside")))
    bad_input = asyncio.run(exception_to_failed_state(SourceError("x", "no such file")))
    transient = asyncio.run(exception_to_failed_state(DatabaseUnavailableError("db", "down")))
    assert retry_unless_refused(ingest, None, refused) is False  # type: ignore[arg-type]
    assert retry_unless_refused(ingest, None, bad_input) is False  # type: ignore[arg-type]
    assert retry_unless_refused(ingest, None, transient) is True  # type: ignore[arg-type]
