"""The ``rag`` command line: the product's front door.

Every command that takes ``--json`` prints exactly one JSON object as its last line of
standard output, so scripts and flows can parse it; human output goes before it. ``main`` is
the console script: whatever goes wrong, the user sees one line and an exit code, never a
traceback (see :mod:`rag_core.cli._output`).
"""

from __future__ import annotations

import sys

from rag_core.cli._output import report_failure
from rag_core.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``rag`` script."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # the last line of defence, outside any command
        sys.exit(report_failure(exc, as_json="--json" in sys.argv))
