"""The commands ``evaluations`` adds to ``rag``: ``rag eval …`` and ``rag bench …``.

Mounted by the CLI through the ``rag.cli`` entry-point group (see ``pyproject.toml``), so
``rag_core`` never imports this package.
"""

from evaluations.cli.bench_commands import bench_app
from evaluations.cli.eval_commands import eval_app

__all__ = ["bench_app", "eval_app"]
