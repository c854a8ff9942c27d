"""The ingestion worker: claim pending items, chunk, embed, write; repeat.

Exactly-once without a lease table: items are claimed with ``FOR UPDATE SKIP LOCKED`` in a
transaction that stays open until their chunks are written and the items are marked done,
then commits. A worker killed at any point loses its transaction, so its items become
pending again for the next claim: nothing is lost and nothing is written twice. Several
workers (threads, processes, Prefect workers on other machines) share one job because
SKIP LOCKED hands each a disjoint batch.

Throughput: embedding is the expensive step, so database writes run on a writer thread
while the next batch is claimed and embedded (a queue of one batch bounds memory). Per
document failures are caught under a savepoint and mark that item ``failed``; the batch
and the job go on. Connection failures (a PostgreSQL restart) are retried with backoff.

An embedding failure (any exception, not only a database error) is isolated to the items
that cause it: the batch is embedded again item by item; an item that still fails goes back
to ``pending`` with ``attempts`` counted and its error kept, the rest is written. After
``max_item_attempts`` an item is ``failed``: a poison document blocks neither the job nor
its resumes, a transient failure (memory, a model server) is still retried. Chunking and
write failures are deterministic: the item fails at once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Connection, Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.chunking import Chunk, ChunkingPolicy, chunk_document
from rag_core.ingestion.sources import SourceLimits
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore

_CLAIM = """
SELECT item_no, source_uri, title, body, metadata, content_hash
  FROM rag.ingestion_items
 WHERE job_id = %s AND status = 'pending'
 ORDER BY item_no
 LIMIT %s
   FOR UPDATE SKIP LOCKED
"""

_CURRENT_DOCUMENTS = """
SELECT d.source_uri, d.document_id, d.content_hash, d.version,
       EXISTS (SELECT 1 FROM rag.chunks c JOIN rag.chunk_embeddings e USING (chunk_id)
                WHERE c.document_id = d.document_id AND e.model_key = %s) AS embedded
  FROM rag.documents d
 WHERE d.tenant_id = %s AND d.is_current AND d.source_uri = ANY(%s)
"""

_CACHED_VECTORS = """
SELECT DISTINCT ON (c.content_hash) c.content_hash, e.embedding
  FROM rag.chunks c JOIN rag.chunk_embeddings e USING (chunk_id)
 WHERE c.tenant_id = %s AND e.tenant_id = %s AND e.model_key = %s
   AND c.content_hash = ANY(%s)
"""


# SET expressions see the row's old values: ``attempts + 1`` is this attempt's number.
_COUNT_ATTEMPT = """
UPDATE rag.ingestion_items
   SET attempts = attempts + 1, error = %s, chunk_count = 0, updated_at = now(),
       status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END
 WHERE job_id = %s AND item_no = %s
RETURNING status
"""


class WorkerPolicy(BaseModel, frozen=True):
    claim_batch: int = Field(default=32, ge=1, le=1000)
    embed_batch_size: int = Field(default=64, ge=1)
    chunking: ChunkingPolicy = ChunkingPolicy()
    # How long a worker keeps retrying while the database is unreachable (a restart).
    reconnect_for_s: float = Field(default=120.0, ge=0)
    source_limits: SourceLimits = SourceLimits()
    # Embedding attempts of one item (counted in rag.ingestion_items.attempts across runs)
    # before it is marked failed.
    max_item_attempts: int = Field(default=3, ge=1, le=100)


@dataclass
class ItemPlan:
    job_id: str
    item_no: int
    source_uri: str
    title: str
    metadata: dict[str, Any]
    content_hash: bytes
    action: str  # "new", "duplicate", "embed_existing"
    previous_document_id: int | None = None
    previous_version: int = 0
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    error: str | None = None
    embed_failed: bool = False  # ``error`` came from the embedder: worth another attempt


@dataclass
class WorkerStats:
    batches: int = 0
    items: int = 0
    ingested: int = 0
    duplicate: int = 0
    failed: int = 0
    item_retries: int = 0  # embedding attempts that failed and put the item back as pending
    chunks_written: int = 0
    chunks_embedded: int = 0
    vectors_reused: int = 0
    embed_s: float = 0.0
    write_s: float = 0.0
    retries: int = 0


@dataclass
class _Batch:
    conn: Connection
    plans: list[ItemPlan]


_STOP = object()


class IngestionWorker:
    """Processes one job's pending items until none is left unclaimed."""

    def __init__(self, db: Database, embedder: Embedder, model_key: str,
                 store: VectorStore, policy: WorkerPolicy | None = None,
                 on_items_done: Callable[[int], None] | None = None) -> None:
        self.db = db
        self.embedder = embedder
        self.model_key = model_key
        self.store = store
        self.policy = policy or WorkerPolicy()
        self.on_items_done = on_items_done
        self.stats = WorkerStats()

    def run(self, tenant_id: TenantId | str, job_id: str) -> WorkerStats:
        tenant = parse_tenant_id(tenant_id)
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_exponential_jitter(initial=0.5, max=10),
            stop=stop_after_delay(self.policy.reconnect_for_s), reraise=True,
            before_sleep=lambda _state: self._count_retry())
        for attempt in retrying:
            with attempt:
                while True:
                    retried = self.stats.item_retries
                    self._run_pipeline(tenant, job_id)
                    # Items put back as pending after the last claim was made wait for
                    # another pass (they are retried until their attempts are used up).
                    if self.stats.item_retries == retried:
                        break
        return self.stats

    def _count_retry(self) -> None:
        self.stats.retries += 1

    # --- the two-stage pipeline ------------------------------------------------------------
    def _run_pipeline(self, tenant: TenantId, job_id: str) -> None:
        handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
        writer_error: list[BaseException] = []
        writer = threading.Thread(target=self._writer_loop, args=(tenant, handoff, writer_error),
                                  name="ingest-writer", daemon=True)
        writer.start()
        try:
            while not writer_error:
                batch = self._claim_and_embed(tenant, job_id)
                if batch is None:
                    break
                handoff.put(batch)
        finally:
            handoff.put(_STOP)
            writer.join()
        if writer_error:
            raise writer_error[0]

    def _claim_and_embed(self, tenant: TenantId, job_id: str) -> _Batch | None:
        conn = self.db.acquire_tenant_transaction(tenant)
        try:
            rows = conn.execute(_CLAIM, [job_id, self.policy.claim_batch]).fetchall()
            if not rows:
                self.db.release(conn, commit=False)
                return None
            # Serialise work on the same document across jobs and workers (a source being
            # re-ingested twice at once): one advisory lock per source, in a fixed order.
            for source_uri in sorted(r[1] for r in rows):
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                             [f"{tenant}:{source_uri}"])
            plans = self._plan(conn, tenant, job_id, rows)
            self._embed(conn, tenant, plans)
            return _Batch(conn, plans)
        except BaseException:
            self.db.release(conn, commit=False)
            raise

    def _plan(self, conn: Connection, tenant: TenantId, job_id: str,
              rows: list[tuple[Any, ...]]) -> list[ItemPlan]:
        current = {r[0]: r for r in conn.execute(
            _CURRENT_DOCUMENTS, [self.model_key, tenant, [r[1] for r in rows]]).fetchall()}
        plans = []
        tokenizer = self.embedder.tokenizer
        for item_no, source_uri, title, body, metadata, digest in rows:
            plan = ItemPlan(job_id, int(item_no), source_uri, title, metadata or {},
                            bytes(digest), "new")
            existing = current.get(source_uri)
            if existing is not None:
                plan.previous_document_id = int(existing[1])
                plan.previous_version = int(existing[3])
                if bytes(existing[2]) == plan.content_hash:
                    plan.action = "duplicate" if existing[4] else "embed_existing"
            if plan.action == "new":
                try:
                    plan.chunks = chunk_document(title, body, tokenizer, self.policy.chunking)
                except Exception as exc:  # a poison document fails alone
                    plan.error = f"chunking failed: {type(exc).__name__}: {exc}"
            elif plan.action == "embed_existing":
                plan.chunks = self._existing_chunks(conn, plan.previous_document_id)
            plans.append(plan)
        return plans

    @staticmethod
    def _existing_chunks(conn: Connection, document_id: int | None) -> list[Chunk]:
        rows = conn.execute("SELECT ordinal, text, token_count, content_hash FROM rag.chunks "
                            "WHERE document_id = %s ORDER BY ordinal", [document_id]).fetchall()
        return [Chunk(int(r[0]), r[1], int(r[2]), bytes(r[3])) for r in rows]

    def _embed(self, conn: Connection, tenant: TenantId, plans: list[ItemPlan]) -> None:
        wanted = {c.content_hash: c.text for p in plans if p.error is None for c in p.chunks}
        cached: dict[bytes, np.ndarray] = {}
        if wanted:
            for digest, vector in conn.execute(
                    _CACHED_VECTORS, [tenant, tenant, self.model_key, list(wanted)]).fetchall():
                cached[bytes(digest)] = np.asarray(vector.to_numpy(), dtype=np.float32)
        missing = [h for h in wanted if h not in cached]
        started = time.perf_counter()
        if missing:
            try:
                self._embed_into(cached, missing, wanted)
            except Exception as exc:  # whatever the embedder raises
                self._embed_item_by_item(plans, cached, wanted, exc)
        self.stats.embed_s += time.perf_counter() - started
        self.stats.chunks_embedded += sum(h in cached for h in missing)
        self.stats.vectors_reused += len(wanted) - len(missing)
        for plan in plans:
            if plan.error is None:
                plan.vectors = [cached[c.content_hash] for c in plan.chunks]

    def _embed_into(self, cached: dict[bytes, np.ndarray], hashes: list[bytes],
                    texts: dict[bytes, str]) -> None:
        vectors = self.embedder.embed_passages([texts[h] for h in hashes],
                                               batch_size=self.policy.embed_batch_size)
        cached.update(zip(hashes, vectors, strict=True))

    def _embed_item_by_item(self, plans: list[ItemPlan], cached: dict[bytes, np.ndarray],
                            texts: dict[bytes, str], batch_error: Exception) -> None:
        """After a failed batch: embed each item's chunks alone, so only the items that
        make the embedder fail are held back (with their error) and the others go on."""
        todo = [(plan, list(dict.fromkeys(c.content_hash for c in plan.chunks
                                          if c.content_hash not in cached)))
                for plan in plans if plan.error is None]
        todo = [(plan, own) for plan, own in todo if own]
        for plan, own in todo:
            error: Exception | None = batch_error
            if len(todo) > 1:  # else the failed batch was this item alone
                try:
                    self._embed_into(cached, own, texts)
                    error = None
                except Exception as exc:  # kept on the item, retried later
                    error = exc
            if error is not None:
                plan.error = f"embedding failed: {type(error).__name__}: {error}".strip()
                plan.embed_failed = True

    def _writer_loop(self, tenant: TenantId, handoff: queue.Queue[Any],
                     errors: list[BaseException]) -> None:
        while True:
            batch = handoff.get()
            if batch is _STOP:
                return
            if errors:  # drain: a failed writer rolls back whatever is still queued
                self.db.release(batch.conn, commit=False)
                continue
            try:
                started = time.perf_counter()
                finished = self._write(batch.conn, tenant, batch.plans)
                self.db.release(batch.conn, commit=True)
                self.stats.write_s += time.perf_counter() - started
                self.stats.batches += 1
                if self.on_items_done and finished:
                    self.on_items_done(finished)
            except BaseException as exc:
                errors.append(exc)
                with contextlib.suppress(Exception):  # the connection may be gone already
                    self.db.release(batch.conn, commit=False)

    # --- writing ---------------------------------------------------------------------------
    def _write(self, conn: Connection, tenant: TenantId, plans: list[ItemPlan]) -> int:
        """Write the batch's outcomes; returns how many items are finished (not pending)."""
        changed = False
        finished = 0
        for plan in plans:
            if plan.embed_failed:
                finished += self._count_attempt(conn, plan)
                continue
            finished += 1
            self.stats.items += 1
            if plan.error is not None:
                self._mark(conn, plan, "failed")
                continue
            if plan.action == "duplicate":
                self._mark(conn, plan, "duplicate", document_id=plan.previous_document_id)
                self.stats.duplicate += 1
                continue
            try:
                with conn.transaction():  # a savepoint: this document fails alone
                    document_id = self._write_document(conn, tenant, plan)
                    self._mark(conn, plan, "ingested", document_id=document_id)
            except psycopg.OperationalError:
                raise  # the connection is gone: the whole batch is retried
            except Exception as exc:  # not only psycopg: this document alone
                plan.error = f"write failed: {type(exc).__name__}: {exc}".strip()
                self._mark(conn, plan, "failed")
                continue
            self.stats.ingested += 1
            self.stats.chunks_written += len(plan.chunks)
            changed = True
        if changed:
            # New data invalidates cached answers: every cache key includes this version.
            conn.execute("UPDATE rag.tenants SET corpus_version = corpus_version + 1 "
                         "WHERE tenant_id = %s", [tenant])
        return finished

    def _count_attempt(self, conn: Connection, plan: ItemPlan) -> int:
        """Record a failed embedding attempt of ``plan``'s item: pending again (the next
        claim retries it) until it has used its attempts, then failed. Returns 1 when the
        item is finished (failed), else 0."""
        row = conn.execute(_COUNT_ATTEMPT, [plan.error, self.policy.max_item_attempts,
                                            plan.job_id, plan.item_no]).fetchone()
        if row is not None and row[0] == "failed":
            self.stats.items += 1
            self.stats.failed += 1
            return 1
        self.stats.item_retries += 1
        return 0

    def _write_document(self, conn: Connection, tenant: TenantId, plan: ItemPlan) -> int:
        to_store = [ChunkToStore(c.text, c.token_count, c.content_hash, v)
                    for c, v in zip(plan.chunks, plan.vectors, strict=True)]
        if plan.action == "embed_existing":
            assert plan.previous_document_id is not None
            chunk_ids = [int(r[0]) for r in conn.execute(
                "SELECT chunk_id FROM rag.chunks WHERE document_id = %s ORDER BY ordinal",
                [plan.previous_document_id]).fetchall()]
            self.store.insert_embeddings(conn, tenant, chunk_ids, plan.vectors)
            return plan.previous_document_id
        if plan.previous_document_id is not None:
            # A changed document: the old version stops being current and loses its chunks
            # in the same transaction that stores the new version.
            conn.execute("UPDATE rag.documents SET is_current = false, superseded_at = now() "
                         "WHERE document_id = %s", [plan.previous_document_id])
            conn.execute("DELETE FROM rag.chunks WHERE document_id = %s",
                         [plan.previous_document_id])
        row = conn.execute(
            "INSERT INTO rag.documents (tenant_id, source_uri, external_id, content_hash, title,"
            " metadata, version) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING document_id",
            [tenant, plan.source_uri, plan.source_uri.rsplit("#", 1)[-1], plan.content_hash,
             plan.title, Jsonb(plan.metadata),
             plan.previous_version + 1]).fetchone()
        assert row is not None
        document_id = int(row[0])
        self.store.insert_chunks(conn, tenant, document_id, to_store)
        return document_id

    def _mark(self, conn: Connection, plan: ItemPlan, status: str,
              document_id: int | None = None) -> None:
        if status == "failed":
            self.stats.failed += 1
        conn.execute(
            "UPDATE rag.ingestion_items SET status = %s, attempts = attempts + 1, error = %s, "
            "document_id = %s, chunk_count = %s, updated_at = now() "
            "WHERE job_id = %s AND item_no = %s",
            [status, plan.error, document_id, len(plan.chunks) if status == "ingested" else 0,
             plan.job_id, plan.item_no])
