"""``pip install .`` (not editable) gives a working ``rag``: the wheel carries its migrations,
dbt project and demo data, and ``rag db upgrade`` / ``rag doctor`` work from any folder.

Offline and quick: the wheel is built from a copy of the checkout without build isolation
and installed with ``--no-deps`` into a fresh virtual environment; the dependencies come
from the project's environment through a plain path line in a ``.pth`` file. Python does
not process the ``.pth`` files of a folder added that way, so the project's editable-install
finder stays inert and ``rag_core`` can only come from the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment

# Not part of a source tree: local state, caches and build products of the checkout.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".rag", ".*_cache", ".hypothesis", "__pycache__", "*.pyc", "build",
    "dist", "*.egg-info", "target", "logs", "dbt_packages", "reports")


def _run(command: list[str], cwd: Path, env: dict[str, str],
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env,
                            timeout=timeout, check=False)
    assert result.returncode == 0, (f"{command[:4]} exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the project's wheel installed (not editable)."""
    work = tmp_path_factory.mktemp("wheel")
    env = cli_environment(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    # A copy, so the build never writes build/ or *.egg-info into the shared checkout.
    source = work / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
    wheels = work / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(wheels), str(source)], work, env)
    (wheel,) = wheels.glob("rag_platform-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for resource in ("sql/0001_foundation.up.sql", "dbt/dbt_project.yml",
                     "data/scifact/PROVENANCE.md"):
        assert f"rag_core/_bundled/{resource}" in names, f"the wheel lacks {resource}"

    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work, env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", str(wheel)], work, env)
    site_packages = Path(_run([str(python), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              work, env).stdout.strip())
    project_site = Path(sysconfig.get_paths()["purelib"])
    (site_packages / "_project_dependencies.pth").write_text(f"{project_site}\n")
    return venv


def _env(database: str) -> dict[str, str]:
    return cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR), RAG_EMBEDDED_DATABASE=database)


def _last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


_WHERE = """
import json, sys
import rag_core, rag_core.config as config
print(json.dumps({"rag_core": rag_core.__file__, "sys_path": sys.path,
                  **{name: str(config.resource_dir(name)) for name in ("sql", "dbt", "data")},
                  "migrations_dir": str(config.Settings().migrations_dir)}))
"""


@pytest.mark.slow
def test_the_wheel_uses_its_own_package_and_resources(installed_venv: Path,
                                                      tmp_path: Path) -> None:
    python = installed_venv / "bin" / "python"
    where = _last_json(_run([str(python), "-c", _WHERE], tmp_path, _env("rag")))
    package = Path(where["rag_core"]).resolve().parent
    assert package.is_relative_to(installed_venv.resolve()), where
    assert not package.is_relative_to(REPO_ROOT), where
    for name in ("sql", "dbt", "data"):
        assert Path(where[name]).resolve() == package / "_bundled" / name, where
    assert Path(where["migrations_dir"]).resolve() == package / "_bundled" / "sql"
    assert str(REPO_ROOT) not in where["sys_path"]


@pytest.mark.slow
def test_installed_rag_upgrades_a_database_and_passes_doctor(
        installed_venv: Path, create_database: Callable[[str], Settings],
        pg_server: EmbeddedPostgres, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    database = create_database("wheel").embedded_database
    rag = str(installed_venv / "bin" / "rag")
    every_version = [m.version for m in migrations.discover(REPO_ROOT / "sql")]

    upgrade = _run([rag, "db", "upgrade", "--json"], tmp_path, _env(database))
    assert "warning: plugin" not in upgrade.stderr  # rag eval / rag bench load from the wheel
    assert _last_json(upgrade) == {"applied": every_version, "database": database}

    doctor = _run([rag, "doctor", "--json"], tmp_path, _env(database))
    report = _last_json(doctor)
    assert report["ok"] is True, report
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["migrations"]["status"] == "ok"
    assert f"{len(every_version)} applied" in checks["migrations"]["detail"]

    again = _run([rag, "db", "upgrade", "--json"], tmp_path, _env(database))
    assert _last_json(again)["applied"] == []
