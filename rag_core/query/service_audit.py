"""The audit rows of one ``ask_many`` call: a ``batch`` row over ``sub_query`` rows, or one
``query`` row, built from whatever each question went through (answered, cached, refused
or failed), so that every question is audited exactly once."""

from __future__ import annotations

from collections.abc import Sequence

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.query.audit import AuditRecord
from rag_core.query.service_types import Pending, QueryConfig

__all__ = ["audit_records"]


def audit_records(tenant: TenantId, items: Sequence[Pending], config: QueryConfig, *,
                  batch_id: str | None, session_hash: str | None,
                  parent: str | None) -> list[AuditRecord]:
    """The rows of ``items``: with ``batch_id`` a batch row first (its tokens the sum, its
    latency the slowest question's, ``partial`` when any question failed), whose children
    the questions' rows are; ``parent`` (a batch job's id) is the parent of the top row."""
    records: list[AuditRecord] = []
    if batch_id is not None:
        records.append(AuditRecord(
            tenant_id=tenant, kind="batch", request_id=batch_id, batch_id=batch_id,
            parent_request_id=parent,
            session_hash=session_hash, model=config.model,
            prompt_version=config.prompt_version,
            prompt_tokens=sum(i.answer.prompt_tokens for i in items),
            completion_tokens=sum(i.answer.completion_tokens for i in items),
            latency_ms={"total": max(i.answer.latency_ms["total"] for i in items)},
            error_code=None if all(i.answer.error_code is None for i in items)
            else ErrorCode.PARTIAL, rollout_cohort=config.rollout_cohort))
    for item in items:
        answer, result = item.answer, item.result
        records.append(AuditRecord(
            tenant_id=tenant, kind="sub_query" if batch_id else "query",
            request_id=answer.request_id, parent_request_id=batch_id or parent,
            session_hash=session_hash,
            batch_id=(result.batch_id if result is not None else batch_id),
            question_redacted=item.redacted if item.admitted else None,
            model=answer.model,
            prompt_version=config.prompt_version,
            chunk_ids=[s.chunk_id for s in answer.sources],
            prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
            latency_ms=answer.latency_ms, cache_hit=answer.cache_hit,
            retries=result.retries if result is not None else 0,
            breaker_state=result.breaker_state if result is not None else None,
            error_code=answer.error_code, rollout_cohort=config.rollout_cohort,
            quota_debt=item.quota_debt))
    return records
