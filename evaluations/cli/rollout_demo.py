"""``rag rollout demo``: joins the product's ``rag rollout`` group through the ``rag.cli``
entry point named ``rollout`` (the demo needs the fake LLM server of ``rag_testing``, which
the library never imports); the work is :func:`evaluations.rollout.demo.run_rollout_demo`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rag_core.cli._output import console, emit_json, err_console, fail_cleanly
from rag_core.config import get_settings

__all__ = ["rollout_app"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]

rollout_app = typer.Typer(help="Feature flags and their canary rollouts.", no_args_is_help=True)


def _line(name: str, summary: dict[str, Any]) -> str:
    line = (f"{name}: {summary['outcome']} at {summary['final_percentage']} %, stages passed "
            f"{summary['stages_passed']}")
    if "failed_gate" in summary:
        canary, control = summary["canary"], summary["control"]
        line += (f"; gate {summary['failed_gate']} failed: canary error rate "
                 f"{canary['error_rate']} over {canary['requests']} questions, control "
                 f"{control['error_rate']} over {control['requests']}")
    return line


@rollout_app.command("demo")
@fail_cleanly
def demo(tenants: Annotated[int, typer.Option(min=10, max=500)] = 40,
         docs_per_tenant: Annotated[int, typer.Option(min=2, max=200)] = 8,
         soak_s: Annotated[float, typer.Option("--soak-s", min=0.5)] = 3.0,
         min_requests: Annotated[int, typer.Option(min=1)] = 20,
         as_json: JsonFlag = False) -> None:
    """Two rollouts against a fake LLM with generated traffic: a healthy one (hybrid
    retrieval) that reaches 100 %, a faulty one (a prompt the LLM fails on) rolled back at
    the first gate it fails."""
    from evaluations.rollout.demo import DemoConfig, run_rollout_demo

    config = DemoConfig(tenants=tenants, docs_per_tenant=docs_per_tenant, soak_s=soak_s,
                        min_requests=min_requests)
    result = run_rollout_demo(get_settings(), config,
                              note=lambda m: err_console.print(m, highlight=False))
    for name in ("healthy", "faulty"):
        console.print(_line(name, result[name]), highlight=False, markup=False)
    if as_json:
        emit_json(result)
