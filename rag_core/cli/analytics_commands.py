"""``rag analytics check|run|sql|url``: the dbt marts' data quality (Great Expectations
checkpoints), and an analyst's way in (SQL as the analytics role, its connection URL).

``check`` validates the marts as they are; ``run`` builds them first (``dbt build``, as
``rag dbt build`` does) and checks them whatever the build's outcome, since a failed dbt test
leaves the marts it built in place and the checkpoint says which rows broke what. Both
render the data docs (``<reports>/gx/index.html``, see ``rag_core.ops.analytics``) and fail
with ``data_quality_failed`` (exit 6) naming each broken expectation, its column and a
sample of the offending rows.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.cli.dbt_commands import run_dbt
from rag_core.config import get_settings
from rag_core.ops import services
from rag_core.ops.analytics import CheckReport, check_marts, raise_on_failure
from rag_core.ops.analytics.queries import analytics_url, run_analytics_query

analytics_app = typer.Typer(help="The dbt marts: data quality (Great Expectations) and SQL "
                                 "as the read-only analytics role.", no_args_is_help=True)

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


@analytics_app.command("sql")
@fail_cleanly
def sql(query: Annotated[str, typer.Argument(help="one SQL statement, e.g. SELECT * FROM "
                                                  "rag_analytics.token_cost_daily")],
        max_rows: Annotated[int, typer.Option(min=1, max=100_000,
                                              help="rows shown at most")] = 100,
        as_json: bool = _JSON) -> None:
    """Run a read-only query as the analytics role (rag_analyst) and print its rows."""
    settings = get_settings()
    services.start_services(settings)
    result = run_analytics_query(settings, query, max_rows=max_rows)
    if as_json:
        emit_json(result.as_dict())
        return
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*["" if value is None else str(value) for value in row])
    console.print(table)
    if result.truncated:
        console.print(f"(first {max_rows} rows; --max-rows for more)")


@analytics_app.command("url")
@fail_cleanly
def url(show_password: Annotated[bool, typer.Option(
            "--show-password", help="print the password too (for psql or a BI tool)")] = False,
        as_json: bool = _JSON) -> None:
    """The analytics role's connection URL (the embedded server is started first)."""
    settings = get_settings()
    services.start_services(settings)
    value = analytics_url(settings, show_password=show_password)
    if as_json:
        emit_json({"url": value})
    else:
        typer.echo(value)


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
