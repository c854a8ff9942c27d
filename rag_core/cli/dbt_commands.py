"""``rag dbt …``: run dbt on the audit project as the analytics role (``rag_analyst``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from psycopg.conninfo import conninfo_to_dict

from rag_core.cli._output import fail_cleanly
from rag_core.cli.dbt_docs import generate_docs, is_docs_generate
from rag_core.common.offline import offline_environment
from rag_core.config import Settings, get_settings, resource_dir
from rag_core.db.connection import resolve_analytics_target
from rag_core.ops import services


def dbt_environment(settings: Settings) -> dict[str, str]:
    """Environment for dbt: the analytics role's connection (read-only, the reporting views
    across tenants, its own schema ``rag_analytics``; migration 0013), never the admin's.

    dbt writes its target and logs under the state folder, so the project itself may be
    read-only (an installed wheel).
    """
    target = resolve_analytics_target(settings)
    params = conninfo_to_dict(target.url)
    dbt_state = settings.state_dir / "dbt"
    return {**offline_environment(),
            "RAG_DBT_HOST": str(params.get("host", "127.0.0.1")),
            "RAG_DBT_PORT": str(params.get("port", "5432")),
            "RAG_DBT_USER": str(params.get("user") or target.role),
            "RAG_DBT_PASSWORD": str(params.get("password", "")),
            "RAG_DBT_DBNAME": str(params.get("dbname", "rag")),
            "DBT_PROFILES_DIR": str(resource_dir("dbt")),
            "DBT_TARGET_PATH": str(dbt_state / "target"),
            "DBT_LOG_PATH": str(dbt_state / "logs")}


def run_dbt(settings: Settings, args: list[str]) -> int:
    executable = Path(sys.executable).parent / "dbt"
    return subprocess.run([str(executable), *args], cwd=resource_dir("dbt"),
                          env=dbt_environment(settings), check=False).returncode


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    @fail_cleanly
    def dbt(ctx: typer.Context) -> None:
        """Run dbt on the audit models, e.g. `rag dbt build` (arguments go to dbt);
        `rag dbt docs generate` also writes the docs to <reports>/dbt-docs/."""
        settings = get_settings()
        services.start_services(settings)
        args = list(ctx.args) or ["build"]
        if is_docs_generate(args):  # written under the reports folder too (rag_core.cli.dbt_docs)
            target = Path(dbt_environment(settings)["DBT_TARGET_PATH"])
            raise typer.Exit(code=generate_docs(settings, args, run_dbt, target))
        raise typer.Exit(code=run_dbt(settings, args))
