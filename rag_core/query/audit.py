"""The audit log: one row per query, per sub-query (batch member) and per batch.

Rows are written through tenant sessions (RLS applies: a tenant can only audit itself).
Questions are stored redacted (PII removed before anything is audited) or only as a hash,
by configuration. When the database write fails the rows are appended to a local spool
file (JSON lines, fsynced) and written later by ``flush_spool``; the unique request id makes
replays idempotent, so "audit 100%" holds across database outages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from prometheus_client import Counter
from psycopg.types.json import Jsonb

from rag_core.codes import ErrorCode
from rag_core.common.metrics import REGISTRY
from rag_core.common.tenancy import parse_tenant_id
from rag_core.db.pool import Database

_log = logging.getLogger(__name__)

AUDIT_SPOOLED = Counter("rag_audit_spooled", "Audit rows spooled because the database failed.",
                        registry=REGISTRY)

_INSERT = """
INSERT INTO rag.audit_log (
    tenant_id, occurred_at, request_id, parent_request_id, kind, session_hash, batch_id,
    question_redacted, question_hash, model, prompt_version, chunk_ids, prompt_tokens,
    completion_tokens, latency_ms, cache_hit, retries, breaker_state, error_code,
    rollout_cohort)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, request_id) DO NOTHING
"""

QuestionStorage = Literal["redacted", "hash"]


def question_hash(redacted_question: str) -> str:
    return hashlib.sha256(redacted_question.encode("utf-8")).hexdigest()


@dataclass
class AuditRecord:
    tenant_id: str
    kind: Literal["query", "sub_query", "batch"]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    parent_request_id: str | None = None
    session_hash: str | None = None
    batch_id: str | None = None
    question_redacted: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    chunk_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    retries: int = 0
    breaker_state: str | None = None
    error_code: ErrorCode | None = None
    rollout_cohort: str | None = None
    occurred_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        # A record read back from the spool carries the code's string value.
        if self.error_code is not None:
            self.error_code = ErrorCode(self.error_code)


class AuditLog:
    def __init__(self, db: Database, spool_dir: Path,
                 store_question: QuestionStorage = "redacted") -> None:
        self._db = db
        self._spool_dir = spool_dir
        self._store_question = store_question
        self._spool_lock = threading.Lock()

    def write(self, records: Sequence[AuditRecord]) -> bool:
        """Write ``records``; True if they reached the database, False if spooled."""
        if not records:
            return True
        try:
            self._insert(records)
            return True
        except (psycopg.Error, OSError) as exc:
            _log.warning("audit write failed (%s); spooling %d rows", exc, len(records))
            self._spool(records)
            return False

    def _row(self, record: AuditRecord) -> list[Any]:
        question = record.question_redacted
        digest = question_hash(question) if question is not None else None
        stored = question if self._store_question == "redacted" else None
        return [parse_tenant_id(record.tenant_id), record.occurred_at, record.request_id,
                record.parent_request_id, record.kind, record.session_hash, record.batch_id,
                stored, digest, record.model, record.prompt_version, record.chunk_ids,
                record.prompt_tokens, record.completion_tokens, Jsonb(record.latency_ms),
                record.cache_hit, record.retries, record.breaker_state,
                None if record.error_code is None else record.error_code.value,
                record.rollout_cohort]

    def _insert(self, records: Sequence[AuditRecord]) -> None:
        by_tenant: dict[str, list[AuditRecord]] = defaultdict(list)
        for record in records:
            by_tenant[record.tenant_id].append(record)
        for tenant, rows in by_tenant.items():
            with self._db.tenant_session(tenant) as conn, conn.cursor() as cur:
                cur.executemany(_INSERT, [self._row(r) for r in rows])

    def _spool(self, records: Sequence[AuditRecord]) -> None:
        AUDIT_SPOOLED.inc(len(records))
        with self._spool_lock:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            path = self._spool_dir / f"audit-{os.getpid()}.jsonl"
            with path.open("a", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(dataclasses.asdict(record)) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def spooled(self) -> int:
        """Rows waiting in the spool."""
        return sum(len(p.read_text(encoding="utf-8").splitlines())
                   for p in self._spool_dir.glob("audit-*.jsonl"))

    def flush_spool(self) -> int:
        """Write spooled rows to the database; returns how many were flushed."""
        flushed = 0
        with self._spool_lock:
            for path in sorted(self._spool_dir.glob("audit-*.jsonl")):
                records = [AuditRecord(**json.loads(line))
                           for line in path.read_text(encoding="utf-8").splitlines() if line]
                self._insert(records)  # raises if the database is still down: keep the file
                path.unlink()
                flushed += len(records)
        return flushed
