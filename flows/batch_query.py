"""Prefect flow ``batch-query``: answer a file of questions for a tenant in batches.

Each task answers one group of questions through the query service (≤5 questions per LLM
call, at most ``max_concurrent_llm_calls`` calls in flight per process and, through the
Redis semaphore, across every worker process). Answers go to a JSONL file; the flow
returns the summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows._resources import platform
from rag_core.common.tenancy import TENANT_ID_REGEX, parse_tenant_id
from rag_core.query.batch_run import BatchSummary, Question, open_private, read_questions


class BatchQueryParameters(BaseModel):
    questions: str = Field(description="questions file: .jsonl (id/_id + question/text) or .csv")
    tenant_id: str = Field(pattern=TENANT_ID_REGEX)
    output: str | None = Field(default=None, description="answers .jsonl (default: beside "
                                                         "the questions, *.answers.jsonl)")
    limit: int | None = Field(default=None, ge=1)
    group_size: int = Field(default=25, ge=1, le=500, description="questions per task")
    include_question: bool = Field(default=False, description="also write the raw question "
                                                              "(it may hold personal data)")


@task(name="read-questions", retries=1)
def load_questions(path: str, limit: int | None) -> list[Question]:
    return read_questions(Path(path), limit,
                          max_questions=platform().settings.max_batch_questions)


@task(name="answer-group", retries=2, retry_delay_seconds=[10, 60])
def answer_group(tenant_id: str, group: list[Question],
                 include_question: bool = False) -> list[dict[str, Any]]:
    answers = platform().query_service.ask_many(
        parse_tenant_id(tenant_id), [q.text for q in group],
        question_ids=[q.question_id for q in group])
    return [a.as_dict(include_question=include_question) for a in answers]


@flow(name="batch-query", log_prints=True)
def batch_query(params: BatchQueryParameters) -> dict[str, Any]:
    started = time.perf_counter()
    questions = load_questions(params.questions, params.limit)
    output = Path(params.output or Path(params.questions).with_suffix(".answers.jsonl"))
    groups = [questions[i:i + params.group_size]
              for i in range(0, len(questions), params.group_size)]
    futures = [answer_group.submit(params.tenant_id, group, params.include_question)
               for group in groups]
    summary = BatchSummary(questions=len(questions), output=str(output))
    with open_private(output) as handle:
        for future in futures:  # in input order
            for answer in future.result():
                handle.write(json.dumps(answer) + "\n")
                summary.record(answer)
    summary.wall_s = round(time.perf_counter() - started, 3)
    get_run_logger().info("batch-query: %s", summary.as_dict())
    return summary.as_dict()

