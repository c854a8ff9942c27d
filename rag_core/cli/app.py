"""Typer application: ``rag doctor``, ``rag db …``, ``rag services …``, ``rag tenant …``,
``rag isolation-probe``, and the commands of the other modules and plugins.

Plugins: any installed distribution can add a command group through the entry-point group
``rag.cli`` (name = the group's command, value = a ``typer.Typer``); that is how
``evaluations`` contributes ``rag eval`` and ``rag bench`` without the library depending
on it. A plugin group named like one of ours adds its commands to it (``rag rollout
demo``, which needs the fake LLM server of ``rag_testing``). A plugin that fails to load
is reported on stderr and skipped.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Annotated

import typer
from rich.table import Table

from rag_core.cli import (
    analytics_commands,
    audit_commands,
    dbt_commands,
    embedding_commands,
    ingest_commands,
    key_commands,
    partition_commands,
    prefect_commands,
    query_commands,
    quota_commands,
    rls_commands,
    rollback_commands,
    rollout_commands,
    serve_commands,
)
from rag_core.cli._output import console, emit_json, err_console, fail_cleanly, options
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.db import migrations, tenant_admin
from rag_core.db.connection import admin_connection
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.embeddings.registry import ensure_models
from rag_core.errors import ConfigurationError
from rag_core.ops import services
from rag_core.ops.doctor import run_doctor
from rag_core.ops.isolation_probe import DEFAULT_SIZES, run_isolation_probe
from rag_core.redis.embedded import EmbeddedRedis

PLUGIN_GROUP = "rag.cli"

app = typer.Typer(help="Multi-tenant RAG data platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The PostgreSQL server and its migrations.", no_args_is_help=True)
services_app = typer.Typer(help="All embedded services (PostgreSQL and Redis).",
                           no_args_is_help=True)
tenant_app = typer.Typer(help="Tenant administration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(services_app, name="services")
app.add_typer(tenant_app, name="tenant")
key_commands.register(tenant_app)
partition_commands.register(tenant_app)
ingest_commands.register(app)
query_commands.register(app)
dbt_commands.register(app)
analytics_commands.register(app)
audit_commands.register(app)
quota_commands.register(app)
rollback_commands.register(app)
serve_commands.register(app)
rollout_commands.register(app)
prefect_commands.register(app)
embedding_commands.register(app)
rls_commands.register(app)


def _mount_plugins(root: typer.Typer) -> None:
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            group = entry.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            err_console.print(f"warning: plugin {entry.name!r} ({entry.value}) not loaded: "
                              f"{type(exc).__name__}: {exc}", highlight=False, markup=False)
            continue
        existing = next((g.typer_instance for g in root.registered_groups
                         if g.name == entry.name and g.typer_instance is not None), None)
        if existing is not None:  # a plugin's commands joining one of ours (rollout demo)
            existing.registered_commands.extend(group.registered_commands)
            continue
        root.add_typer(group, name=entry.name)


_mount_plugins(app)


@app.callback()
def _global_options(debug: Annotated[bool, typer.Option(
        "--debug", help="print full tracebacks of unexpected errors")] = False) -> None:
    """Multi-tenant RAG data platform."""
    options.debug = debug
    if debug:
        logging.basicConfig(level=logging.DEBUG)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


@app.command()
@fail_cleanly
def doctor(as_json: JsonFlag = False) -> None:
    """Check every component (PostgreSQL, pgvector, migrations, RLS, roles, Redis)."""
    report = run_doctor(get_settings())
    table = Table(title="rag doctor")
    table.add_column("component")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    colours = {"ok": "green", "fail": "bold red", "warn": "yellow", "info": "cyan"}
    for check in report.checks:
        table.add_row(check.name, f"[{colours[check.status]}]{check.status}[/]", check.detail)
    console.print(table)
    if as_json:
        emit_json(report.as_dict())
    if not report.ok:
        raise typer.Exit(code=1)


@app.command()
@fail_cleanly
def setup(as_json: JsonFlag = False) -> None:
    """Start embedded services (if no URLs are configured), apply all migrations and export
    the ONNX embedding model files (once)."""
    settings = get_settings()
    services.start_services(settings)
    result = services.upgrade_database(settings)
    console.print(f"database {result.database}: applied {result.applied or 'nothing new'}")
    ensure_models(settings.state_dir)
    console.print(f"embedding models ready under {settings.state_dir / 'models'}")
    if as_json:
        emit_json({"ok": True, "applied": result.applied, "database": result.database})


# --- services --------------------------------------------------------------------------
@services_app.command("start")
@fail_cleanly
def services_start(as_json: JsonFlag = False) -> None:
    """Start the embedded PostgreSQL and Redis (those not replaced by URLs)."""
    services.start_services(get_settings())
    services_status(as_json)


@services_app.command("stop")
@fail_cleanly
def services_stop(as_json: JsonFlag = False) -> None:
    """Stop the embedded servers (data is kept)."""
    services.stop_services(get_settings())
    services_status(as_json)


@services_app.command("status")
@fail_cleanly
def services_status(as_json: JsonFlag = False) -> None:
    """Show whether the embedded servers run."""
    settings = get_settings()
    payload = {
        "postgres": (EmbeddedPostgres(settings.state_dir).status().as_dict()
                     if settings.uses_embedded_postgres else {"external": True}),
        "redis": (EmbeddedRedis(settings.state_dir).status().as_dict()
                  if settings.uses_embedded_redis else {"external": True}),
    }
    for name, state in payload.items():
        console.print(f"{name}: {state}")
    if as_json:
        emit_json(payload)


# --- db ------------------------------------------------------------------------------------
def _require_embedded() -> EmbeddedPostgres:
    settings = get_settings()
    if not settings.uses_embedded_postgres:
        raise ConfigurationError("DATABASE_URL", "(set)",
                                 "the server is external: start/stop it where it runs")
    return EmbeddedPostgres(settings.state_dir)


@db_app.command("start")
@fail_cleanly
def db_start(as_json: JsonFlag = False) -> None:
    """Start the embedded PostgreSQL (idempotent)."""
    server = _require_embedded()
    status = server.start()
    services.ensure_embedded_database(get_settings().state_dir,
                                      get_settings().embedded_database)
    console.print(f"PostgreSQL running on 127.0.0.1:{status.port} (pid {status.pid})")
    if as_json:
        emit_json(status.as_dict())


@db_app.command("stop")
@fail_cleanly
def db_stop(as_json: JsonFlag = False) -> None:
    """Stop the embedded PostgreSQL (idempotent; data is kept)."""
    status = _require_embedded().stop()
    console.print("PostgreSQL stopped")
    if as_json:
        emit_json(status.as_dict())


@db_app.command("status")
@fail_cleanly
def db_status(as_json: JsonFlag = False) -> None:
    """Server state (embedded) and migration state."""
    settings = get_settings()
    payload: dict[str, object] = {}
    if settings.uses_embedded_postgres:
        server_status = EmbeddedPostgres(settings.state_dir).status()
        payload["server"] = server_status.as_dict()
        console.print(f"server: {'running' if server_status.running else 'stopped'}"
                      f" (port {server_status.port})")
        if not server_status.running:
            if as_json:
                emit_json(payload)
            return
    with admin_connection(settings) as conn:
        states = migrations.status(conn, settings.migrations_dir)
    table = Table(title="migrations")
    for column in ("version", "name", "applied", "checksum"):
        table.add_column(column)
    for state in states:
        checksum = "-" if state.checksum_ok is None else ("ok" if state.checksum_ok else "EDITED")
        table.add_row(f"{state.version:04d}", state.name, str(state.applied), checksum)
    console.print(table)
    payload["migrations"] = [vars(s) for s in states]
    if as_json:
        emit_json(payload)


@db_app.command("upgrade")
@fail_cleanly
def db_upgrade(target: Annotated[int | None, typer.Option(help="stop at this version")] = None,
               as_json: JsonFlag = False) -> None:
    """Apply pending migrations (up to --target)."""
    result = services.upgrade_database(get_settings(), target)
    console.print(f"applied: {result.applied or 'nothing new'}")
    if as_json:
        emit_json({"applied": result.applied, "database": result.database})


@db_app.command("downgrade")
@fail_cleanly
def db_downgrade(target: Annotated[int, typer.Argument(help="roll back to this version "
                                                            "(0 = everything)")],
                 as_json: JsonFlag = False) -> None:
    """Roll back applied migrations above version TARGET, newest first."""
    rolled_back = services.downgrade_database(get_settings(), target)
    console.print(f"rolled back: {rolled_back or 'nothing'}")
    if as_json:
        emit_json({"rolled_back": rolled_back})


# --- tenants -------------------------------------------------------------------------------
@tenant_app.command("create")
@fail_cleanly
def tenant_create(tenant_id: Annotated[str | None, typer.Option("--id")] = None,
                  name: Annotated[str, typer.Option("--name")] = "",
                  as_json: JsonFlag = False) -> None:
    """Create a tenant (a fresh id unless --id is given)."""
    with Platform(get_settings()).admin_connection() as conn:
        tenant = tenant_admin.create_tenant(conn, tenant_id, name)
    console.print(tenant)
    if as_json:
        emit_json({"tenant_id": tenant})


@tenant_app.command("delete")
@fail_cleanly
def tenant_delete(tenant_id: str, as_json: JsonFlag = False) -> None:
    """Delete a tenant and all of its data, its Redis keys included."""
    with Platform(get_settings()) as platform, platform.admin_connection() as conn:
        deletion = tenant_admin.delete_tenant(conn, tenant_id, redis_keys=platform.tenant_keys)
    purge = deletion.purge
    console.print("deleted" if deletion.existed else "no such tenant")
    if purge is not None and purge.complete:
        console.print(f"Redis keys purged: {purge.keys_deleted}")
    elif purge is not None:
        # The row is gone either way; what is left in Redis is unreadable and expires.
        console.print(f"Redis keys not purged ({purge.error}): run this command again when "
                      "Redis is back", style="yellow")
    if as_json:
        emit_json({"tenant_id": tenant_id, "deleted": deletion.existed,
                   "redis_keys_purged": purge.keys_deleted if purge else None,
                   "redis_purge_error": purge.error if purge else None})


# --- isolation probe -----------------------------------------------------------------------
@app.command("isolation-probe")
@fail_cleanly
def isolation_probe(
    probes: Annotated[int, typer.Option(min=1, help="number of randomized probes")] = 10_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    tenant_sizes: Annotated[str, typer.Option(
        help="vectors per probe tenant, comma-separated")] = ",".join(map(str, DEFAULT_SIZES)),
    as_json: JsonFlag = False,
) -> None:
    """Attack tenant isolation with randomized reads and writes; report leaks (must be 0)."""
    try:
        sizes = [int(part) for part in tenant_sizes.split(",")]
    except ValueError as exc:
        raise ConfigurationError("--tenant-sizes", tenant_sizes, "integers, comma-separated") \
            from exc
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigurationError("--tenant-sizes", tenant_sizes, "two or more sizes, each >= 1")
    with Platform(get_settings()) as platform:
        report = run_isolation_probe(platform.settings, platform.database, probes, seed=seed,
                                     sizes=sizes)
    console.print(f"probes={report.probes} leaks={report.leaks} "
                  f"refused_writes={report.refused_writes}/{report.write_attempts} "
                  f"searches={report.searches} short_results={report.short_results} "
                  f"rejected_ids={report.rejected_ids} in {report.elapsed_s}s")
    if as_json:
        emit_json(report.as_dict())
    if report.leaks:
        raise typer.Exit(code=1)
