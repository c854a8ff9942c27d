"""Prefect flow ``batch-query``: answer a file of questions for a tenant in batches.

Each task answers one group of questions through the query service (≤5 questions per LLM
call, at most ``max_concurrent_llm_calls`` calls in flight per process and, through the
Redis semaphore, across every worker process). Answers go to a JSONL file; the flow
returns the summary.

Parameters are not the local user: the questions file must lie under
``RAG_QUESTIONS_ROOTS`` and ``output`` is a name under ``RAG_OUTPUTS_DIR`` (default: the
questions file's stem + ``.answers.jsonl``), written 0600 and only once complete (see
``rag_core.common.paths``); anything else fails with ``path_outside_roots``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows._resources import platform, retry_unless_refused
from rag_core.common.tenancy import TENANT_ID_REGEX, parse_tenant_id
from rag_core.query import batch_run
from rag_core.query.batch_run import BatchSummary, Question


class BatchQueryParameters(BaseModel):
    questions: str = Field(description="questions file: .jsonl (id/_id + question/text) or "
                                       ".csv, under RAG_QUESTIONS_ROOTS")
    tenant_id: str = Field(pattern=TENANT_ID_REGEX)
    output: str | None = Field(default=None, description="answers .jsonl: a name under "
                                                         "RAG_OUTPUTS_DIR (default: the "
                                                         "questions' stem + .answers.jsonl)")
    limit: int | None = Field(default=None, ge=1)
    group_size: int = Field(default=25, ge=1, le=500, description="questions per task")
    include_question: bool = Field(default=False, description="also write the raw question "
                                                              "(it may hold personal data)")


@task(name="read-questions", retries=1, retry_condition_fn=retry_unless_refused)
def load_questions(path: str, limit: int | None) -> list[Question]:
    return platform().batch_files.read_questions(path, limit)


# No task retries: every question asked is audited, so a retried group would be audited
# twice under new request ids. A dependency outage (database, Redis) instead fails the
# group's questions with their typed code and the flow goes on, as `rag batch` does;
# what still raises is a refusal or a bug, which a retry would not mend.
@task(name="answer-group")
def answer_group(tenant_id: str, group: list[Question],
                 include_question: bool = False) -> list[dict[str, Any]]:
    return batch_run.answer_group(platform().query_service, parse_tenant_id(tenant_id), group,
                                  include_question=include_question)


@flow(name="batch-query", log_prints=True)
def batch_query(params: BatchQueryParameters) -> dict[str, Any]:
    started = time.perf_counter()
    files = platform().batch_files
    # Refused before any question is asked (and before the target is touched).
    output = files.answers_path(params.output, params.questions)
    questions = load_questions(params.questions, params.limit)
    groups = [questions[i:i + params.group_size]
              for i in range(0, len(questions), params.group_size)]
    futures = [answer_group.submit(params.tenant_id, group, params.include_question)
               for group in groups]
    summary = BatchSummary(questions=len(questions), output=str(output))
    with files.write_answers(output) as handle:
        for future in futures:  # in input order
            for answer in future.result():
                handle.write(json.dumps(answer) + "\n")
                summary.record(answer)
    summary.wall_s = round(time.perf_counter() - started, 3)
    get_run_logger().info("batch-query: %s", summary.as_dict())
    return summary.as_dict()

