"""Run the marts' expectation suites as Great Expectations checkpoints, render data docs.

Each mart of :func:`~rag_core.ops.analytics.suites.mart_suites` is validated where it lives,
through GX's PostgreSQL datasource (SQLAlchemy with the psycopg 3 driver,
``postgresql+psycopg://``), not read into a DataFrame first as ingestion's record batches
are: a mart like ``fct_questions`` grows with every question asked, and GX then computes
each expectation as a query in the database and fetches only a sample of the offending rows
(result format SUMMARY: counts, and the first rows named by the mart's key columns). It
connects as the analytics role (:func:`rag_core.db.connection.resolve_analytics_target`),
never as the admin, with the platform's connect timeout and pooler options.

One checkpoint per mart, because the key columns that name a failing row (its result
format's ``unexpected_index_column_names``) differ from mart to mart. The context is
ephemeral: suites are built from code on every run, nothing is written but the data docs.
They are rendered (``UpdateDataDocsAction``) into a fresh folder that then replaces
``<reports>/gx/`` (so a reader never sees half a site and old runs do not pile up):
``<reports>`` is ``RAG_REPORTS_DIR``, else the checkout's ``reports/``, else, installed
(the package folder may be read-only), ``<state_dir>/reports``.

GX takes seconds to import: it is imported on first use, with telemetry off
(``GX_ANALYTICS_ENABLED=false`` from :mod:`rag_core.common.offline`).
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from rag_core.common.offline import apply_offline_environment
from rag_core.config import DatabasePooler, Settings, reports_root
from rag_core.db.connection import pooler_options, redact_url, resolve_analytics_target
from rag_core.errors import DatabaseUnavailableError, DataQualityError
from rag_core.ops.analytics.report import CheckReport, ExpectationOutcome, MartOutcome
from rag_core.ops.analytics.suites import (
    ANALYTICS_SCHEMA,
    Expectation,
    MartSuite,
    QualityLimits,
    mart_suites,
)

__all__ = ["check_marts", "data_docs_dir", "raise_on_failure", "run_checks", "sqlalchemy_url"]

_SITE = "rag_marts"
_SAMPLE_ROWS = 20  # offending rows fetched per expectation (the count is exact)

_gx_lock = threading.Lock()
_gx_module: Any = None


def _gx() -> Any:
    global _gx_module
    with _gx_lock:
        if _gx_module is None:
            apply_offline_environment()
            import great_expectations as gx

            _gx_module = gx
        return _gx_module


def data_docs_dir(settings: Settings) -> Path:
    """Where the data docs go (see the module docstring)."""
    return reports_root(settings) / "gx"


def sqlalchemy_url(conninfo: str) -> str:
    """A libpq URL or conninfo string as SQLAlchemy's ``postgresql+psycopg`` URL (password
    and other parameters escaped by SQLAlchemy itself)."""
    from sqlalchemy.engine import URL

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    host = params.pop("host", None)
    query = dict(params)
    for name in ("user", "password", "port", "dbname"):
        query.pop(name, None)
    if host is not None and host.startswith("/"):  # a unix socket folder
        query["host"], host = host, None
    return URL.create("postgresql+psycopg", username=params.get("user"),
                      password=params.get("password"), host=host,
                      port=int(params["port"]) if "port" in params else None,
                      database=params.get("dbname"), query=query
                      ).render_as_string(hide_password=False)


def _tables(url: str, schema: str, connect_args: Mapping[str, Any]) -> set[str]:
    try:
        with psycopg.connect(url, **connect_args) as conn:
            rows = conn.execute("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = %s", [schema]).fetchall()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(redact_url(url), str(exc)) from exc
    return {str(r[0]) for r in rows}


@contextlib.contextmanager
def _rendered_into(docs_dir: Path | None) -> Iterator[Path | None]:
    """A fresh folder to render into, put in place of ``docs_dir`` when rendering ends."""
    if docs_dir is None:
        yield None
        return
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".gx-new-", dir=docs_dir.parent))
    try:
        yield fresh
        if docs_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=".gx-old-", dir=docs_dir.parent))
            docs_dir.rename(old / "gx")
            fresh.rename(docs_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            fresh.rename(docs_dir)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _exception(item: Any) -> str | None:
    info = item.exception_info or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "raised an exception")
            return " ".join(message.split())[:500]
    return None


def _plain(value: object) -> object:
    """A value as JSON, a Prefect artifact and a message can show it (uuid, dates, decimals
    as text)."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _outcome(mart: str, expectation: Expectation, item: Any) -> ExpectationOutcome:
    result = item.result or {}
    rows = [{k: _plain(v) for k, v in row.items()}
            for row in result.get("partial_unexpected_index_list") or ()
            if isinstance(row, Mapping)]
    return ExpectationOutcome(
        mart=mart, expectation=str(item.expectation_config.type),
        columns=expectation.columns, rule=expectation.rule, success=bool(item.success),
        checked_rows=result.get("element_count"), unexpected_count=result.get("unexpected_count"),
        rows=tuple(rows),
        exception=_exception(item))


def _check_mart(context: Any, datasource: Any, suite: MartSuite, *, schema: str,
                docs: bool) -> MartOutcome:
    gx = _gx()
    # The expectation classes are re-exported dynamically (mypy cannot see them).
    gxe: Any = importlib.import_module("great_expectations.expectations")
    asset = datasource.add_table_asset(suite.mart, table_name=suite.mart, schema_name=schema)
    batch = asset.add_batch_definition_whole_table("all rows")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.mart))
    ours: dict[str, Expectation] = {}
    for expectation in suite.expectations:
        added = gx_suite.add_expectation(getattr(gxe, expectation.kind)(
            **expectation.kwargs, description=expectation.rule))
        ours[added.id] = expectation
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.mart, data=batch, suite=gx_suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[_SITE])]
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{schema}.{suite.mart}", validation_definitions=[definition],
        actions=actions if docs else [],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": _SAMPLE_ROWS,
                       "unexpected_index_column_names": list(suite.key_columns)}))
    [validation] = checkpoint.run().run_results.values()
    outcomes = tuple(_outcome(suite.mart, ours[item.expectation_config.id], item)
                     for item in validation.results)
    counted = [o.checked_rows for o in outcomes if o.checked_rows is not None]
    return MartOutcome(suite.mart, rows=max(counted) if counted else None,
                       expectations=outcomes)


def run_checks(url: str, limits: QualityLimits, *, docs_dir: Path | None = None,
               pooler: DatabasePooler = "none", connect_timeout_s: float = 5.0,
               marts: Sequence[str] | None = None,
               schema: str = ANALYTICS_SCHEMA) -> CheckReport:
    """Validate the marts (all, or those named) of ``schema`` on the database at ``url``;
    with ``docs_dir``, render the data docs there."""
    suites = [s for s in mart_suites(limits) if marts is None or s.mart in marts]
    connect_args = {"connect_timeout": max(1, round(connect_timeout_s)),
                    **pooler_options(pooler)}
    present = _tables(url, schema, connect_args)
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    datasource = context.data_sources.add_postgres(
        schema, connection_string=sqlalchemy_url(url), kwargs={"connect_args": connect_args})
    outcomes: list[MartOutcome] = []
    try:
        with _rendered_into(docs_dir) as folder:
            if folder is not None:
                context.add_data_docs_site(site_name=_SITE, site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                      "base_directory": str(folder)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
            for suite in suites:
                if suite.mart not in present:
                    outcomes.append(MartOutcome(suite.mart, missing=True))
                    continue
                outcomes.append(_check_mart(context, datasource, suite, schema=schema,
                                            docs=folder is not None))
    finally:
        with contextlib.suppress(Exception):  # nothing was connected: nothing to close
            datasource.get_engine().dispose()
    return CheckReport(schema, tuple(outcomes),
                       data_docs=None if docs_dir is None else docs_dir / "index.html")


def check_marts(settings: Settings, *, docs: bool = True,
                marts: Sequence[str] | None = None) -> CheckReport:
    """The marts checked as the analytics role under ``settings``."""
    return run_checks(resolve_analytics_target(settings).url,
                      QualityLimits.from_settings(settings),
                      docs_dir=data_docs_dir(settings) if docs else None,
                      pooler=settings.db_pooler,
                      connect_timeout_s=settings.db_connect_timeout_s, marts=marts)


def raise_on_failure(report: CheckReport, *, dbt_exit: int = 0) -> CheckReport:
    """``report``, or :class:`DataQualityError` with its summary when anything broke (also
    when the ``dbt build`` before it exited ``dbt_exit`` != 0: a failed dbt test)."""
    if report.success and dbt_exit == 0:
        return report
    if report.success:
        raise DataQualityError(f"dbt build failed (exit {dbt_exit}); the checkpoint on the "
                               "marts it left passed", failed=1)
    summary = report.summary()
    if dbt_exit != 0:
        summary = f"dbt build failed (exit {dbt_exit}); {summary}"
    raise DataQualityError(summary, failed=len(report.failures) + len(report.missing)
                           + (dbt_exit != 0))
