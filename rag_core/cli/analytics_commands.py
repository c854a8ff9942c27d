"""``rag analytics check|run``: the dbt marts' data quality (Great Expectations checkpoints).

``check`` validates the marts as they are; ``run`` builds them first (``dbt build``, as
``rag dbt build`` does) and checks them whatever the build's outcome, since a failed dbt test
leaves the marts it built in place and the checkpoint says which rows broke what. Both
render the data docs (``<reports>/gx/index.html``, see ``rag_core.ops.analytics``) and fail
with ``data_quality_failed`` (exit 6) naming each broken expectation, its column and a
sample of the offending rows.
"""

from __future__ import annotations

import typer

from rag_core.cli._output import emit_json, fail_cleanly
from rag_core.cli.dbt_commands import run_dbt
from rag_core.config import get_settings
from rag_core.ops import services
from rag_core.ops.analytics import CheckReport, check_marts, raise_on_failure

analytics_app = typer.Typer(help="Data quality of the dbt marts (Great Expectations).",
                            no_args_is_help=True)

_MART = typer.Option(None, "--mart", help="check only this mart (repeatable)")
_NO_DOCS = typer.Option(False, "--no-docs", help="do not render the data docs")
_JSON = typer.Option(False, "--json", help="print the report as one JSON line")


def _show(report: CheckReport) -> None:
    for mart in report.marts:
        state = "missing" if mart.missing else ("ok" if mart.success else "FAILED")
        typer.echo(f"{mart.mart:<24} {state:<8} rows={mart.rows} "
                   f"expectations={len(mart.expectations)} failed={len(mart.failures)}")
    for failure in report.failures:
        typer.echo(f"  {failure.line()}")
    if report.data_docs is not None:
        typer.echo(f"data docs: {report.data_docs}")


@analytics_app.command("check")
@fail_cleanly
def check(mart: list[str] | None = _MART, no_docs: bool = _NO_DOCS,
          as_json: bool = _JSON) -> None:
    """Run the marts' expectation suites; exit 6 (data_quality_failed) when a row breaks one."""
    settings = get_settings()
    services.start_services(settings)
    report = check_marts(settings, docs=not no_docs, marts=mart or None)
    if not as_json:
        _show(report)
    raise_on_failure(report)
    if as_json:
        emit_json(report.as_dict())


@analytics_app.command("run")
@fail_cleanly
def run(no_docs: bool = _NO_DOCS, as_json: bool = _JSON) -> None:
    """`dbt build`, then the marts' checkpoint; fails when either fails."""
    settings = get_settings()
    services.start_services(settings)
    dbt_exit = run_dbt(settings, ["build", "--quiet"] if as_json else ["build"])
    report = check_marts(settings, docs=not no_docs)
    if not as_json:
        _show(report)
    raise_on_failure(report, dbt_exit=dbt_exit)
    if as_json:
        emit_json({**report.as_dict(), "dbt_exit": dbt_exit})


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
