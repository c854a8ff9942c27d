"""Output and failure handling shared by every ``rag`` command.

A failure never shows a user a traceback:

* a :class:`~rag_core.errors.RagCoreError` becomes one line, ``error [code]: message``, and
  the exit code of its :class:`~rag_core.codes.ErrorCode` (documented in the README);
* anything else is a bug: one line naming it and the file the full traceback was written to
  (``--debug`` prints it instead), exit code 70.

With ``--json`` the same facts also go to standard output as the last line, as one object:
``{"ok": false, "error": <class>, "code": <code>, "message": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import typer
from rich.console import Console

from rag_core.codes import ErrorCode, ExitCode
from rag_core.errors import RagCoreError

#: How commands end on purpose (an exit code, a usage error): not failures to report.
_PASS_THROUGH = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort,
                 click.ClickException)

console = Console(stderr=False)
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


class _Options:
    """Global options set by the app callback (``rag --debug ...``)."""

    debug = False


options = _Options()


def emit_json(payload: dict[str, Any]) -> None:
    """Print ``payload`` as one JSON line (the contract of every ``--json`` flag)."""
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def _traceback_dir() -> Path:
    """Where unexpected tracebacks go: the state folder's ``logs/``, else the temp folder."""
    try:
        from rag_core.config import get_settings

        folder = get_settings().state_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except Exception:  # the settings themselves may be what failed
        return Path(tempfile.gettempdir())


def write_traceback(exc: BaseException) -> Path:
    """Write the full traceback of ``exc`` to a new 0600 file; returns its path."""
    text = "".join(traceback.format_exception(exc))
    path = _traceback_dir() / f"rag-traceback-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _one_line(text: str) -> str:
    """Whitespace (a driver's multi-line message, say) folded: the report is one line."""
    return " ".join(text.split())


def report_failure(exc: BaseException, *, as_json: bool) -> int:
    """Print the one-line report of ``exc``; returns the exit code to end with."""
    if isinstance(exc, RagCoreError):
        code, exit_code, message = exc.code, int(exc.code.exit_code), _one_line(str(exc))
        # markup off: "[code]" and messages quoting user input are text, not rich tags
        err_console.print(f"error [{code}]: {message}", style="bold red", highlight=False,
                          markup=False, soft_wrap=True)
    else:
        code, exit_code = ErrorCode.INTERNAL_ERROR, int(ExitCode.INTERNAL)
        message = _one_line(f"unexpected {type(exc).__name__}: {exc}")
        if options.debug:
            err_console.print("".join(traceback.format_exception(exc)), highlight=False,
                              markup=False)
            where = "traceback above"
        else:
            where = f"full traceback in {write_traceback(exc)}; --debug prints it"
        err_console.print(f"error [{code}]: {message} ({where})", style="bold red",
                          highlight=False, markup=False, soft_wrap=True)
    if as_json:
        emit_json({"ok": False, "error": type(exc).__name__, "code": code.value,
                   "message": message})
    return exit_code


def fail_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command so that any failure ends with one line and its exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            raise typer.Exit(code=report_failure(exc, as_json=bool(kwargs.get("as_json")))) \
                from exc

    return wrapper
