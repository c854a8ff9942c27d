"""An item whose embedding keeps failing (any exception, not only a database error) is marked
failed with its error after ``max_item_attempts`` attempts and the job goes on; attempts are
counted in the database, so they add up across runs and a resume finishes the job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rag_core.common.tenancy import TenantId
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder, FloatMatrix
from rag_core.ingestion.jobs import plan_job, summarize
from rag_core.ingestion.runner import run_ingestion
from rag_core.ingestion.worker import WorkerPolicy
from rag_core.retrieval.vector_store import VectorStore
from tests.ingestion.conftest import scifact_records

POISON = "poison-marker-7f3a"


class FailingEmbedder:
    """The real embedder, except that a batch holding ``POISON`` raises ``ValueError`` (the
    first ``fail_times`` such batches; all of them when None)."""

    def __init__(self, inner: Embedder, fail_times: int | None = None) -> None:
        self._inner = inner
        self._fail_times = fail_times
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_passages(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        if any(POISON in t for t in texts) and (self._fail_times is None
                                                or self.failures < self._fail_times):
            self.failures += 1
            raise ValueError("this text cannot be embedded")
        return self._inner.embed_passages(texts, batch_size=batch_size)


def _source(write_jsonl: Callable[..., Path], n: int = 6, poison_at: int = 2) -> Path:
    records: list[dict[str, object]] = list(scifact_records(n, start=300))
    records[poison_at] = {**records[poison_at], "text": f"{records[poison_at]['text']} {POISON}"}
    return write_jsonl(records)


def _items(db: Database, tenant: TenantId, job_id: str) -> dict[int, tuple[Any, ...]]:
    with db.tenant_session(tenant) as conn:
        rows = conn.execute("SELECT item_no, status, attempts, error FROM rag.ingestion_items "
                            "WHERE job_id = %s ORDER BY item_no", [job_id]).fetchall()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def test_poison_item_fails_after_n_attempts_and_the_job_goes_on(
        db: Database, embedder: Embedder, store: VectorStore,
        make_tenant: Callable[[], TenantId], write_jsonl: Callable[..., Path]) -> None:
    tenant = make_tenant()
    failing = FailingEmbedder(embedder)
    policy = WorkerPolicy(claim_batch=10, embed_batch_size=16, max_item_attempts=3)

    result = run_ingestion(db, failing, store, tenant, _source(write_jsonl), policy=policy)

    summary = result.summary
    assert (summary.read, summary.ingested, summary.failed, summary.pending) == (6, 5, 1, 0)
    assert summary.balanced and summary.status == "partial"
    items = _items(db, tenant, summary.job_id)
    status, attempts, error = items[2]
    assert (status, attempts) == ("failed", 3)
    assert "ValueError" in error and "cannot be embedded" in error
    assert all(items[n][:2] == ("ingested", 1) and items[n][2] is None
               for n in items if n != 2)
    # The batch failed once, and then the item alone on each of its 3 attempts.
    assert failing.failures == 4
    with db.tenant_session(tenant) as conn:
        row = conn.execute("SELECT count(*) FROM rag.documents").fetchone()
    assert row is not None and row[0] == 5


def test_attempts_add_up_across_runs_and_a_resume_finishes_the_job(
        db: Database, embedder: Embedder, store: VectorStore,
        make_tenant: Callable[[], TenantId], write_jsonl: Callable[..., Path],
        admin_conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    tenant = make_tenant()
    source = _source(write_jsonl)
    policy = WorkerPolicy(claim_batch=10, embed_batch_size=16, max_item_attempts=3)
    job_id = plan_job(db, tenant, source, store.model_key, params={})
    # An earlier run (say, killed afterwards) already spent two attempts on the poison item.
    admin_conn.execute("UPDATE rag.ingestion_items SET attempts = 2 WHERE job_id = %s "
                       "AND item_no = 2", [job_id])
    failing = FailingEmbedder(embedder)

    result = run_ingestion(db, failing, store, tenant, source, policy=policy)

    assert result.resumed and result.summary.job_id == job_id
    assert result.summary.status == "partial" and result.summary.pending == 0
    assert result.summary.balanced
    assert _items(db, tenant, job_id)[2][:2] == ("failed", 3)
    assert failing.failures == 2  # the batch, then the item once: its last attempt
    assert summarize(db, tenant, job_id).failed == 1


@pytest.mark.parametrize("fail_times", [1, 3])
def test_a_transient_failure_is_retried_and_the_item_ingested(
        db: Database, embedder: Embedder, store: VectorStore,
        make_tenant: Callable[[], TenantId], write_jsonl: Callable[..., Path],
        fail_times: int) -> None:
    tenant = make_tenant()
    # Three failures are the batch and the item's first two attempts: the third succeeds.
    failing = FailingEmbedder(embedder, fail_times=fail_times)
    policy = WorkerPolicy(claim_batch=10, embed_batch_size=16, max_item_attempts=3)

    result = run_ingestion(db, failing, store, tenant, _source(write_jsonl), policy=policy)

    assert (result.summary.ingested, result.summary.failed) == (6, 0)
    assert result.summary.status == "succeeded"
    status, attempts, error = _items(db, tenant, result.summary.job_id)[2]
    assert (status, error) == ("ingested", None)
    assert attempts == (1 if fail_times == 1 else 3)
