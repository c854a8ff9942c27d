"""Build hook: copy the migrations, the dbt project and the demo data into the wheel.

Everything else about the package is in pyproject.toml. In a source checkout (and an
editable install) rag_core finds sql/, dbt/ and data/ beside the package
(``rag_core.config.resource_dir``); an installed wheel carries copies under
``rag_core/_bundled/``, so `pip install .` into another environment can still migrate a
database, run the audit models and the demo.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("sql", "dbt", "data")
# Build products and local state of the dbt project are not part of the package.
IGNORED = shutil.ignore_patterns("target", "logs", "dbt_packages", "__pycache__", ".user.yml")


class BuildPyWithResources(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads them from the checkout
        target = Path(self.build_lib) / "rag_core" / "_bundled"
        for name in BUNDLED:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(ROOT / name, target / name, ignore=IGNORED)


setup(cmdclass={"build_py": BuildPyWithResources})
