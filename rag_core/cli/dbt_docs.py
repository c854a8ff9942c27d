"""``rag dbt docs generate``: dbt's documentation site for analysts, under the reports folder.

dbt writes its docs into its target path, which ``rag dbt`` keeps under the state folder (the
project of an installed wheel is read-only). Analysts look for them beside the other reports,
so after a successful ``dbt docs generate`` the files are copied to ``<reports>/dbt-docs/``:
``index.html`` with ``manifest.json`` and ``catalog.json`` (for ``dbt docs serve`` or any
static file server), and ``static_index.html``, the same page with both documents inlined
(``--static``, added unless given), which opens straight from disk. ``<reports>`` is
``RAG_REPORTS_DIR``, else the checkout's ``reports/``, else ``<state_dir>/reports`` when
installed (as the benchmark reports). Generating fetches nothing, and the page loads nothing
from the network: dbt's page only starts its usage tracker when the manifest says usage
statistics are on, and the project turns them off (``dbt_project.yml`` flags).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from rag_core.config import Settings, reports_root

__all__ = ["DOCS_FILES", "docs_dir", "generate_docs", "is_docs_generate"]

DOCS_FILES = ("index.html", "static_index.html", "manifest.json", "catalog.json")


def is_docs_generate(args: Sequence[str]) -> bool:
    """Whether ``rag dbt ARGS`` asks for ``dbt docs generate``."""
    return list(args[:2]) == ["docs", "generate"]


def docs_dir(settings: Settings) -> Path:
    """Where the generated docs are copied: ``<reports>/dbt-docs``."""
    return reports_root(settings) / "dbt-docs"


def generate_docs(settings: Settings, args: Sequence[str],
                  run: Callable[[Settings, list[str]], int], target_dir: Path) -> int:
    """Run ``dbt docs generate`` (``--static`` added) through ``run``, then copy its files
    from the target path (``--target-path`` if given, else ``target_dir``) to
    :func:`docs_dir`. Returns dbt's exit code."""
    arguments = list(args)
    if "--static" not in arguments:
        arguments.append("--static")
    code = run(settings, arguments)
    if code != 0:
        return code
    if "--target-path" in arguments[:-1]:
        target_dir = Path(arguments[arguments.index("--target-path") + 1])
    destination = docs_dir(settings)
    destination.mkdir(parents=True, exist_ok=True)
    for name in DOCS_FILES:
        shutil.copyfile(target_dir / name, destination / name)
    print(f"dbt docs written to {destination} (open static_index.html)")
    return 0
