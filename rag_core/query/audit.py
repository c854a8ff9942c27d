"""The audit log: one row per query, per sub-query (batch member) and per batch.

Rows are written through tenant sessions (RLS applies: a tenant can only audit itself).
Questions are stored redacted (PII removed before anything is audited) or only as a hash,
by configuration. The hash is an HMAC-SHA256 under a server key, not a plain sha256: a short
question ("is it cancer?") would otherwise be found again by hashing guesses.

When the database write fails the rows go to a local spool (:mod:`rag_core.query.audit_spool`)
in their stored form: already hashed and already reduced to what the storage mode in force
allowed, so a flush needs neither the key nor the mode of the process that wrote them, and a
row spooled under "hash" can never land with its text. The unique ``(tenant_id,
request_id)`` makes replays idempotent, so "audit 100%" holds across database outages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
from prometheus_client import Counter
from psycopg import sql
from psycopg.types.json import Jsonb

from rag_core.codes import ErrorCode
from rag_core.common.metrics import REGISTRY
from rag_core.common.tenancy import parse_tenant_id
from rag_core.db.pool import Database
from rag_core.errors import ConfigurationError, DatabaseError, DatabaseUnavailableError
from rag_core.query.audit_spool import JsonlSpool, Refusal, SpoolFlush
from rag_core.query.sessions import MIN_KEY_BYTES

__all__ = ["AuditLog", "AuditRecord", "AuditSink", "QuestionStorage", "SpoolFlush",
           "question_hash"]

_log = logging.getLogger(__name__)

AUDIT_SPOOLED = Counter("rag_audit_spooled", "Audit rows spooled because the database failed.",
                        registry=REGISTRY)

#: The columns of an audit row, in the order of ``_StoredRow.values()``, and the SQL type
#: each is sent as: a statement carries one array per column, unnest turns them back into
#: rows. Its text is the same for any number of rows (psycopg caches it, the server may
#: prepare it), where composing and parsing a VALUES list of one placeholder per value was
#: most of a flush's time (3,400 against 980 rows/s, measured side by side). ``chunk_ids``
#: goes as an array literal (unnest would flatten an array of arrays) and is cast back.
_COLUMNS = (
    ("tenant_id", "text"), ("occurred_at", "timestamptz"), ("request_id", "uuid"),
    ("parent_request_id", "uuid"), ("kind", "text"), ("session_hash", "text"),
    ("batch_id", "uuid"), ("question_redacted", "text"), ("question_hash", "text"),
    ("model", "text"), ("prompt_version", "text"), ("chunk_ids", "text"),
    ("prompt_tokens", "int4"), ("completion_tokens", "int4"), ("latency_ms", "jsonb"),
    ("cache_hit", "bool"), ("retries", "int4"), ("breaker_state", "text"),
    ("error_code", "text"), ("rollout_cohort", "text"), ("quota_debt", "text"))
_INSERT = sql.SQL(
    "INSERT INTO rag.audit_log ({columns}) SELECT {values} FROM unnest({arrays}) AS u({columns})"
    " ON CONFLICT (tenant_id, request_id) DO NOTHING").format(
    columns=sql.SQL(", ").join(sql.Identifier(c) for c, _ in _COLUMNS),
    values=sql.SQL(", ").join(
        sql.SQL("{}::bigint[]").format(sql.Identifier(c)) if c == "chunk_ids"
        else sql.Identifier(c) for c, _ in _COLUMNS),
    arrays=sql.SQL(", ").join(sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(t))
                              for _, t in _COLUMNS))
#: Rows per INSERT statement: one round trip for a question's rows, few for a spool file.
#: (Not executemany: its pipeline logs a warning to stderr when the database refuses.)
_ROWS_PER_STATEMENT = 1000


#: Version of a spooled line; another version is quarantined, not guessed. A line without
#: one is a bare record from before versioned lines (see ``_StoredRow.from_spool``).
_SPOOL_FORMAT = 1

QuestionStorage = Literal["redacted", "hash"]


def question_hash(redacted_question: str, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the redacted question under the server's audit key: equal
    questions still group together for analysts, guesses cannot be checked without the key."""
    return hmac.new(key, redacted_question.encode("utf-8"), hashlib.sha256).hexdigest()


def checked_audit_key(key: bytes) -> bytes:
    """``key`` if it is long enough for full-strength HMAC-SHA256 (the length, never the key,
    goes into the error)."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError("RAG_AUDIT_HASH_KEY", f"<{len(key)} bytes>",
                                 f"an audit hash key needs at least {MIN_KEY_BYTES} bytes")
    return key


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
    # Tokens no quota counter recorded (Redis was away): "<day>:<reservation id>", charged
    # later from this row by rag_core.limits.settlement.
    quota_debt: str | None = None
    occurred_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        # A record read back from the spool carries the code's string value.
        if self.error_code is not None:
            self.error_code = ErrorCode(self.error_code)


_RECORD_FIELDS = dataclasses.fields(AuditRecord)


@dataclass(frozen=True)
class _StoredRow:
    """A record in the form it is stored and spooled: the question reduced to what the
    storage mode allowed when it was written, its keyed hash computed then."""

    record: AuditRecord
    question_hash: str | None
    storage: QuestionStorage

    def to_spool(self) -> dict[str, Any]:
        # A shallow copy, encoded at once: dataclasses.asdict deep-copies, 25x the cost, and
        # a buffered writer pays this on the hot path of every request.
        record = {f.name: getattr(self.record, f.name) for f in _RECORD_FIELDS}
        return {"v": _SPOOL_FORMAT, "question_storage": self.storage,
                "question_hash": self.question_hash, "record": record}

    @classmethod
    def from_spool(cls, obj: dict[str, Any], key: bytes) -> _StoredRow:
        """The row of a spooled line; ValueError/TypeError (quarantined) if it is not one.

        A line written before lines were versioned is a bare record: it is replayed, not
        lost, but hash-only (which storage mode wrote it is not known, so the private one),
        its hash computed now under ``key``.
        """
        if "v" not in obj and "tenant_id" in obj:
            legacy = AuditRecord(**obj)
            question = legacy.question_redacted
            digest = question_hash(question, key) if question is not None else None
            obj = {"v": _SPOOL_FORMAT, "question_storage": "hash", "question_hash": digest,
                   "record": dataclasses.asdict(legacy)}
        if obj.get("v") != _SPOOL_FORMAT:
            raise ValueError(f"spool line format {obj.get('v')!r}, expected {_SPOOL_FORMAT}")
        storage: QuestionStorage
        match obj.get("question_storage"):
            case "redacted" | "hash" as storage:
                pass
            case other:
                raise ValueError(f"question_storage {other!r}")
        digest = obj.get("question_hash")
        if digest is not None and not isinstance(digest, str):
            raise TypeError(f"question_hash is a {type(digest).__name__}")
        fields = obj.get("record")
        if not isinstance(fields, dict):
            raise TypeError("record is not an object")
        record = AuditRecord(**fields)
        parse_tenant_id(record.tenant_id)
        # type(), not isinstance: a bool is an int to Python and no chunk id to anyone.
        if not isinstance(record.chunk_ids, list) or \
                not all(type(i) is int for i in record.chunk_ids):
            raise TypeError(f"chunk_ids {record.chunk_ids!r:.80}")
        if record.kind not in ("query", "sub_query", "batch"):
            raise ValueError(f"kind {record.kind!r}")
        if storage == "hash":  # whatever the line says: a hash-only row never lands with text
            record = dataclasses.replace(record, question_redacted=None)
        return cls(record, digest, storage)

    def values(self) -> list[Any]:
        r = self.record
        return [parse_tenant_id(r.tenant_id), r.occurred_at, r.request_id, r.parent_request_id,
                r.kind, r.session_hash, r.batch_id, r.question_redacted, self.question_hash,
                r.model, r.prompt_version, "{" + ",".join(map(str, r.chunk_ids)) + "}",
                r.prompt_tokens, r.completion_tokens, Jsonb(r.latency_ms), r.cache_hit,
                r.retries, r.breaker_state,
                None if r.error_code is None else r.error_code.value, r.rollout_cohort,
                r.quota_debt]


class AuditSink(Protocol):
    """Where the query path hands its audit rows: :class:`AuditLog` (through to the
    database) or :class:`~rag_core.query.audit_writer.BufferedAuditLog` (a serving process:
    spooled now, written behind). Either keeps every row it was given."""

    def write(self, records: Sequence[AuditRecord]) -> object: ...


class AuditLog:
    """Writes audit rows; spools them when the database fails; flushes the spool."""

    def __init__(self, db: Database, spool_dir: Path,
                 store_question: QuestionStorage = "redacted", *, hash_key: bytes) -> None:
        self._db = db
        self._spool = JsonlSpool(spool_dir, "audit")
        self._store_question = store_question
        self._key = checked_audit_key(hash_key)

    def write(self, records: Sequence[AuditRecord]) -> bool:
        """Write ``records``; True if they reached the database, False if spooled."""
        if not records:
            return True
        rows = [self._stored(r) for r in records]
        try:
            self._insert(rows)
            return True
        except (psycopg.Error, OSError) as exc:
            _log.warning("audit write failed (%s); spooling %d rows", exc, len(rows))
            self._append(rows)
            return False

    def spool(self, records: Sequence[AuditRecord]) -> None:
        """Put ``records`` in the spool without trying the database (a caller that knows it
        is away; the spool tests)."""
        self._append([self._stored(r) for r in records])

    def stored_lines(self, records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
        """``records`` as spool lines: hashed and reduced to the storage mode now (the form
        a buffered writer appends and :meth:`deliver` inserts)."""
        return [self._stored(r).to_spool() for r in records]

    @property
    def jsonl_spool(self) -> JsonlSpool:
        """The spool this log appends to and flushes (a buffered writer shares it)."""
        return self._spool

    @property
    def quarantine_dir(self) -> Path:
        """Where spooled lines that could not be written are kept (to be looked at)."""
        return self._spool.quarantine_dir

    def spooled(self) -> int:
        """Rows waiting in the spool."""
        return self._spool.waiting()

    def flush_spool(self) -> SpoolFlush:
        """Write spooled rows to the database (see :mod:`rag_core.query.audit_spool`).

        Raises ``DatabaseUnavailableError`` (or ``DatabaseError`` when the database refuses
        the insert) and keeps the rows not written yet for the next flush.
        """
        try:
            return self._spool.drain(self.deliver)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError("(audit spool flush)", str(exc)) from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"the database refused the audit spool flush "
                                f"({type(exc).__name__}); the rows stay spooled") from exc

    # --- internals -------------------------------------------------------------------------
    def _stored(self, record: AuditRecord) -> _StoredRow:
        question = record.question_redacted
        digest = question_hash(question, self._key) if question is not None else None
        if self._store_question == "hash":
            record = dataclasses.replace(record, question_redacted=None)
        return _StoredRow(record, digest, self._store_question)

    def _append(self, rows: Sequence[_StoredRow]) -> None:
        AUDIT_SPOOLED.inc(len(rows))
        self._spool.append([row.to_spool() for row in rows])

    def _insert(self, rows: Sequence[_StoredRow]) -> None:
        by_tenant: dict[str, list[_StoredRow]] = defaultdict(list)
        for row in rows:
            by_tenant[row.record.tenant_id].append(row)
        for tenant, group in by_tenant.items():
            with self._db.tenant_session(tenant) as conn, conn.cursor() as cur:
                for start in range(0, len(group), _ROWS_PER_STATEMENT):
                    chunk = group[start:start + _ROWS_PER_STATEMENT]
                    cur.execute(_INSERT, [list(column) for column in
                                          zip(*(row.values() for row in chunk), strict=True)])

    def deliver(self, objects: list[dict[str, Any]]) -> list[Refusal]:
        """Insert spooled lines; refuse for good (quarantine) what can never be inserted: a
        line that is not a row, a row the database rejects as data (a tenant deleted since,
        a malformed value). An outage or a privilege error raises: the file is kept."""
        refusals: list[Refusal] = []
        by_tenant: dict[str, list[tuple[int, _StoredRow]]] = defaultdict(list)
        for index, obj in enumerate(objects):
            try:
                row = _StoredRow.from_spool(obj, self._key)
            except (TypeError, ValueError) as exc:  # our input errors are ValueErrors too
                refusals.append((index, f"{type(exc).__name__}: {exc}"))
                continue
            by_tenant[row.record.tenant_id].append((index, row))
        for group in by_tenant.values():
            try:
                self._insert([row for _, row in group])
            except (psycopg.errors.IntegrityError, psycopg.errors.DataError):
                # One bad row fails its tenant's transaction: find it, keep the others.
                refusals.extend(self._insert_one_by_one(group))
        return refusals

    def _insert_one_by_one(self, group: list[tuple[int, _StoredRow]]) -> list[Refusal]:
        refusals: list[Refusal] = []
        for index, row in group:
            try:
                self._insert([row])
            except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                refusals.append((index, f"refused by the database: {type(exc).__name__}"))
        return refusals
