"""The folder the ``evaluations`` package was loaded from.

A source checkout is the folder whose git commit a report records, and
what a benchmark's child process needs on its ``PYTHONPATH`` to import ``evaluations`` when
the package is not installed. Data sets are *not* found here: they come from
:func:`rag_core.config.scifact_dir` / ``resource_dir("data")``, which also work installed.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``evaluations`` package (the repository, in a checkout)."""


def relative(path: Path | str) -> str:
    """``path`` relative to the checkout when it lies inside it (reports stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(SOURCE_ROOT))
    except ValueError:
        return str(path)
