"""Output helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from rag_core.errors import RagCoreError

console = Console(stderr=False)
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def emit_json(payload: dict[str, Any]) -> None:
    """Print ``payload`` as one JSON line (the contract of every ``--json`` flag)."""
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def fail_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a ``RagCoreError`` into a one-line message and exit code 2 (JSON if asked)."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RagCoreError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            if kwargs.get("as_json"):
                emit_json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
            raise typer.Exit(code=2) from exc

    return wrapper
