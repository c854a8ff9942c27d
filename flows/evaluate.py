"""Prefect flow ``evaluate``: ``rag eval answers`` as a scheduled or on-demand run.

One task runs the evaluation (``evaluations.answers.evaluation.run_answer_eval``: ingest
into an evaluation tenant or reuse a kept one, the claims through the query service, ragas'
metrics, a ``rag.benchmark_runs`` row); a second publishes the scores as a table artifact.
No retries: every claim asked is audited, and a judge's failures are reported in the result
rather than hidden by a second run.

Parameters are not the local user: the dataset folder must lie under ``RAG_SOURCE_ROOTS``
(``path_outside_roots`` otherwise), and the judge is the worker's own configuration
(``RAG_EVAL__JUDGE_*``), never a parameter, so a run cannot send the corpus to an endpoint
of its choosing.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from flows._resources import platform
from rag_core.common.paths import confine
from rag_core.common.tenancy import TENANT_ID_REGEX


class EvaluateParameters(BaseModel):
    dataset: str = Field(default="data/scifact", description="BEIR folder under "
                                                             "RAG_SOURCE_ROOTS")
    split: str = Field(default="test", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mode: Literal["dense", "hybrid"] | None = Field(
        default=None, description="retrieval mode (default: RAG_RETRIEVAL_MODE)")
    limit_queries: int | None = Field(default=None, ge=1)
    k: int | None = Field(default=None, ge=1, le=100, description="chunks per claim")
    prompt_version: str | None = None
    tenant_id: str | None = Field(default=None, pattern=TENANT_ID_REGEX,
                                  description="a tenant holding the corpus (kept by an "
                                              "earlier run); default: a fresh one")
    keep_tenant: bool = False
    judge: bool = Field(default=True, description="use the worker's judge when "
                                                  "RAG_EVAL__JUDGE_BASE_URL is set")


@task(name="evaluate-answers", cache_policy=NO_CACHE)
def evaluate_answers(params: EvaluateParameters) -> dict[str, Any]:
    # Imported here: ragas takes seconds to import, and loading the flow must not pay it.
    from evaluations.answers.evaluation import run_answer_eval
    from evaluations.answers.judge import JudgeSettings

    shared = platform()
    folder = confine(params.dataset, shared.settings.source_roots,
                     setting="RAG_SOURCE_ROOTS")
    result = run_answer_eval(shared.settings, shared.database, shared.embedder, folder,
                             params.split, mode=params.mode, k=params.k,
                             limit_queries=params.limit_queries,
                             prompt_version=params.prompt_version,
                             keep_tenant=params.keep_tenant, tenant=params.tenant_id,
                             judge=JudgeSettings() if params.judge else None)
    return result.as_dict()


@task(name="answer-quality-artifact", cache_policy=NO_CACHE)
def publish(result: dict[str, Any]) -> None:
    run = result["settings"]
    rows = [{"metric": name, "score": value,
             "claims_scored": result["metric_counts"][name]["scored"],
             "failed": result["metric_counts"][name]["failed"]}
            for name, value in result["metrics"].items()]
    create_table_artifact(rows, key="answer-quality", description=(
        f"{run['dataset']}/{run['split']}, {run['retrieval_mode']}, {run['answerer']} "
        f"answerer ({run['model']}, {run['prompt_version']}), run {result['run_id']}"))


@flow(name="evaluate", log_prints=True)
def evaluate(params: EvaluateParameters | None = None) -> dict[str, Any]:
    """Answer quality of the query path on a BEIR split (``rag eval answers --json``'s
    object)."""
    params = params or EvaluateParameters()
    result = evaluate_answers(params)
    publish(result)
    get_run_logger().info("evaluate: metrics %s, failed %s, run_id %s", result["metrics"],
                          result["failed_metrics"], result["run_id"])
    return result
