"""Batch jobs in PostgreSQL (migration 0011): the store behind ``POST /v1/batches``.

A job is stored with its questions already redacted (the query path answers from the
redacted text anyway, so no raw personal data rests in the table) and runs later in some
worker process (:mod:`rag_core.query.batch_worker`). Its progress is an append-only event
log: one ``answer`` event per question, then one ``summary`` event, numbered 1, 2, 3... so a
reader resumes after the last number it saw and misses nothing.

Who may write: only the holder of the job's lease. Every write first updates the job row
on condition that ``lease_owner`` is still the writer (which also locks the row), then
numbers its events after the highest stored one, in a second statement, so that it sees
the previous holder's committed events. A worker whose lease passed and was taken over is
refused (``False``), and two workers never interleave events of one job.

Finding work is the one cross-tenant step: ``rag.claim_batch_job`` (SECURITY DEFINER)
returns only ids; everything else runs in the tenant's session, under its RLS.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Connection, Database
from rag_core.errors import (
    InputError,
    InputTooLargeError,
    InvalidQuestionError,
    InvalidQuestionIdsError,
    UnknownTenantError,
    unstorable_text,
)
from rag_core.pii import redact
from rag_core.query.batch_run import BatchSummary, Question

#: Longest question id (the CHECK of rag.batch_events.question_id).
MAX_QUESTION_ID_CHARS = 200
#: Most events one ``events`` call returns.
MAX_EVENTS_PER_READ = 1000

_INSERT_JOB = """
INSERT INTO rag.batch_jobs (tenant_id, question_count, questions) VALUES (%s, %s, %s)
RETURNING batch_id, status, question_count, created_at, started_at, finished_at, summary
"""
_GET_JOB = """
SELECT j.batch_id, j.status, j.question_count, j.created_at, j.started_at, j.finished_at,
       j.summary,
       (SELECT count(*) FROM rag.batch_events e
         WHERE e.tenant_id = j.tenant_id AND e.batch_id = j.batch_id AND e.kind = 'answer')
  FROM rag.batch_jobs j
 WHERE j.tenant_id = %s AND j.batch_id = %s
"""
_EVENTS = """
SELECT seq, kind, data FROM rag.batch_events
 WHERE tenant_id = %s AND batch_id = %s AND seq > %s
 ORDER BY seq LIMIT %s
"""
_CLAIM = "SELECT tenant_id, batch_id, attempts FROM rag.claim_batch_job(%s, %s)"
_QUESTIONS = "SELECT questions FROM rag.batch_jobs WHERE tenant_id = %s AND batch_id = %s"
_ANSWERS = """
SELECT data FROM rag.batch_events
 WHERE tenant_id = %s AND batch_id = %s AND kind = 'answer' ORDER BY seq
"""
# The fence of every write: the row is updated (and locked until commit) only while the
# writer still holds the lease; the parameters end with (lease_s,) tenant, batch, owner.
_RENEW = """
UPDATE rag.batch_jobs SET lease_until = clock_timestamp() + make_interval(secs => %s)
 WHERE tenant_id = %s AND batch_id = %s AND status = 'running' AND lease_owner = %s
RETURNING extract(epoch FROM clock_timestamp() - started_at)::float8
"""
_RELEASE = """
UPDATE rag.batch_jobs
   SET lease_owner = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0)
 WHERE tenant_id = %s AND batch_id = %s AND status = 'running' AND lease_owner = %s
"""
_FINISH = """
UPDATE rag.batch_jobs
   SET status = %s, summary = %s, finished_at = clock_timestamp(), lease_owner = NULL,
       lease_until = NULL
 WHERE tenant_id = %s AND batch_id = %s
"""
# A separate statement after the fence: its snapshot is taken once the row lock is held,
# so it sees every event the previous lease holder committed.
_LAST_SEQ = """
SELECT coalesce(max(seq), 0) FROM rag.batch_events WHERE tenant_id = %s AND batch_id = %s
"""
_INSERT_EVENT = """
INSERT INTO rag.batch_events (tenant_id, batch_id, seq, kind, question_id, data)
VALUES (%s, %s, %s, %s, %s, %s)
"""


@dataclass(frozen=True)
class BatchJob:
    """A job as its tenant sees it; ``answered`` counts its answer events so far."""

    batch_id: str
    status: str  # queued | running | done | failed
    question_count: int
    answered: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    summary: dict[str, Any] | None  # the summary event's data, once the job is over

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, timestamps in ISO 8601."""
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()
        return {"batch_id": self.batch_id, "status": self.status,
                "question_count": self.question_count, "answered": self.answered,
                "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "summary": self.summary}


@dataclass(frozen=True)
class BatchEvent:
    """One entry of a job's log: ``seq`` 1, 2, 3...; ``kind`` ``answer`` or ``summary``."""

    seq: int
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class ClaimedJob:
    """A job claimed by ``owner`` for ``lease_s`` seconds (renewable); ``attempts`` counts
    this claim and earlier ones that were not handed back (their workers died)."""

    tenant_id: TenantId
    batch_id: str
    owner: str
    lease_s: float
    attempts: int


@dataclass(frozen=True)
class JobWork:
    """A claimed job's questions (redacted, in order) and the answers already recorded."""

    questions: list[Question]
    answered: list[dict[str, Any]]

    @property
    def remaining(self) -> list[Question]:
        done = {a["question_id"] for a in self.answered}
        return [q for q in self.questions if q.question_id not in done]


def _batch_uuid(batch_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(batch_id)
    except (ValueError, TypeError, AttributeError):
        return None


class BatchJobs:
    """Submit, read and run batch jobs. ``max_questions`` and ``max_question_chars`` bound
    what ``submit`` stores (the query path refuses longer questions, so a job holding one
    could only fail)."""

    def __init__(self, database: Database, *, max_questions: int = 1000,
                 max_question_chars: int = 4000) -> None:
        self._db = database
        self._max_questions = max_questions
        self._max_question_chars = max_question_chars

    # --- the tenant's side -----------------------------------------------------------------
    def submit(self, tenant_id: TenantId | str, questions: Sequence[Question]) -> BatchJob:
        """Store a queued job of ``questions`` (redacted first); refused whole when one of
        them could not be asked (typed input errors), and for a tenant that does not exist."""
        tenant = parse_tenant_id(tenant_id)
        stored = self._redacted(questions)
        try:
            with self._db.tenant_session(tenant) as conn:
                row = conn.execute(_INSERT_JOB, [tenant, len(stored), Jsonb(stored)]).fetchone()
        except psycopg.errors.ForeignKeyViolation as exc:
            raise UnknownTenantError(tenant) from exc
        assert row is not None
        return BatchJob(str(row[0]), row[1], row[2], 0, row[3], row[4], row[5], row[6])

    def get(self, tenant_id: TenantId | str, batch_id: str) -> BatchJob | None:
        """The job, or None when ``batch_id`` is malformed, unknown or another tenant's."""
        tenant = parse_tenant_id(tenant_id)
        key = _batch_uuid(batch_id)
        if key is None:
            return None
        with self._db.tenant_session(tenant) as conn:
            row = conn.execute(_GET_JOB, [tenant, key]).fetchone()
        if row is None:
            return None
        return BatchJob(str(row[0]), row[1], row[2], int(row[7]), row[3], row[4], row[5],
                        row[6])

    def events(self, tenant_id: TenantId | str, batch_id: str, after_seq: int = 0,
               limit: int = 500) -> list[BatchEvent]:
        """The job's events after ``after_seq``, in order, at most ``limit`` (clamped to
        1..MAX_EVENTS_PER_READ); [] when the job is malformed, unknown or another tenant's."""
        tenant = parse_tenant_id(tenant_id)
        key = _batch_uuid(batch_id)
        if key is None:
            return []
        count = max(1, min(limit, MAX_EVENTS_PER_READ))
        with self._db.tenant_session(tenant) as conn:
            rows = conn.execute(_EVENTS, [tenant, key, max(0, after_seq), count]).fetchall()
        return [BatchEvent(int(seq), str(kind), data) for seq, kind, data in rows]

    # --- the runner's side -----------------------------------------------------------------
    def claim(self, owner: str, lease_s: float) -> ClaimedJob | None:
        """One job for ``owner`` (queued, or whose lease passed), or None when none waits."""
        with self._db.unscoped_session() as conn:
            row = conn.execute(_CLAIM, [owner, lease_s]).fetchone()
        if row is None:
            return None
        return ClaimedJob(parse_tenant_id(str(row[0])), str(row[1]), owner, lease_s,
                          int(row[2]))

    def work(self, job: ClaimedJob) -> JobWork:
        """What ``job`` asks and what of it is answered already (by this or an earlier
        lease holder)."""
        with self._db.tenant_session(job.tenant_id) as conn:
            row = conn.execute(_QUESTIONS, [job.tenant_id, job.batch_id]).fetchone()
            answered = [r[0] for r in conn.execute(_ANSWERS, [job.tenant_id, job.batch_id])]
        questions = [] if row is None else [Question(q["id"], q["text"]) for q in row[0]]
        return JobWork(questions, answered)

    def renew(self, job: ClaimedJob) -> bool:
        """Extend the lease by ``job.lease_s`` from now; False once it is no longer held."""
        with self._db.tenant_session(job.tenant_id) as conn:
            return self._fence(conn, job) is not None

    def record_answers(self, job: ClaimedJob, answers: Sequence[Mapping[str, Any]]) -> bool:
        """Append one ``answer`` event per answer (``QueryAnswer.as_dict()`` without the
        raw question), in order, and renew the lease; False (nothing written) once the
        lease is no longer held."""
        with self._db.tenant_session(job.tenant_id) as conn:
            if self._fence(conn, job) is None:
                return False
            first = self._last_seq(conn, job) + 1
            with conn.cursor() as cur:
                cur.executemany(_INSERT_EVENT, [
                    [job.tenant_id, job.batch_id, first + i, "answer", answer["question_id"],
                     Jsonb(dict(answer))] for i, answer in enumerate(answers)])
        return True

    def finish(self, job: ClaimedJob, summary: BatchSummary, *,
               error_code: ErrorCode | None = None, error: str | None = None) -> bool:
        """End the job: ``done``, or ``failed`` with ``error_code``. The summary event (the
        last) and the job's new status commit together, so a reader that saw the summary
        knows the stream is over. False (nothing written) once the lease is not held."""
        with self._db.tenant_session(job.tenant_id) as conn:
            elapsed = self._fence(conn, job)
            if elapsed is None:
                return False
            status = "done" if error_code is None else "failed"
            data = summary.as_dict()
            del data["output"]  # a file name of ``rag batch``: a job writes no file
            data.update(batch_id=job.batch_id, status=status, wall_s=round(elapsed, 3),
                        error_code=error_code, error=error)
            conn.execute(_INSERT_EVENT, [job.tenant_id, job.batch_id,
                                         self._last_seq(conn, job) + 1, "summary", None,
                                         Jsonb(data)])
            conn.execute(_FINISH, [status, Jsonb(data), job.tenant_id, job.batch_id])
        return True

    def release(self, job: ClaimedJob) -> bool:
        """Hand the job back unfinished (a worker stopping): any worker may claim it at
        once, and this claim does not count as an attempt. False when it was not held."""
        with self._db.tenant_session(job.tenant_id) as conn:
            return conn.execute(_RELEASE, [job.tenant_id, job.batch_id,
                                           job.owner]).rowcount == 1

    # --- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _fence(conn: Connection, job: ClaimedJob) -> float | None:
        """Renew and lock the job row if ``job.owner`` still holds it: the seconds since
        the job first started, else None."""
        row = conn.execute(_RENEW, [job.lease_s, job.tenant_id, job.batch_id,
                                    job.owner]).fetchone()
        return None if row is None else float(row[0])

    @staticmethod
    def _last_seq(conn: Connection, job: ClaimedJob) -> int:
        row = conn.execute(_LAST_SEQ, [job.tenant_id, job.batch_id]).fetchone()
        return int(row[0]) if row else 0

    def _redacted(self, questions: Sequence[Question]) -> list[dict[str, str]]:
        """The questions as stored: checked as the query path would, then redacted."""
        if not questions:
            raise InputError("a batch needs at least one question, got 0")
        if len(questions) > self._max_questions:
            raise InputTooLargeError("the batch", len(questions), self._max_questions,
                                     "questions", "RAG_API__MAX_BATCH_QUESTIONS")
        ids = [q.question_id for q in questions]
        if len(set(ids)) != len(ids) or any(
                not qid.strip() or unstorable_text(qid) is not None for qid in ids):
            raise InvalidQuestionIdsError(ids, len(questions))
        stored = []
        for number, question in enumerate(questions, start=1):
            if len(question.question_id) > MAX_QUESTION_ID_CHARS:
                raise InputTooLargeError(f"question id {number}", len(question.question_id),
                                         MAX_QUESTION_ID_CHARS, "characters",
                                         "the id limit of a batch question")
            problem = unstorable_text(question.text) or (
                None if question.text.strip() else "is empty")
            if problem is not None:
                raise InvalidQuestionError(number, problem)
            text = redact(question.text).text
            # The query path measures the text it is given: the redacted one.
            longest = max(len(question.text), len(text))
            if longest > self._max_question_chars:
                raise InputTooLargeError(f"question {number}", longest,
                                         self._max_question_chars, "characters",
                                         "RAG_MAX_QUESTION_CHARS")
            stored.append({"id": question.question_id, "text": text})
        return stored
