"""One exception tree in one place, one typed code per error, and a light package face."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import rag_core
from rag_core import errors
from rag_core.codes import EXIT_CODES, ErrorCategory, ErrorCode, ExitCode
from rag_core.errors import RagCoreError

PACKAGES = ("rag_core", "flows", "evaluations", "rag_testing")


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def _product_modules() -> list[str]:
    names: list[str] = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        names += [info.name for info in pkgutil.walk_packages(package.__path__,
                                                             prefix=f"{package_name}.")
                  if not info.name.endswith("__main__")]
    return names


def test_every_exception_of_the_product_is_defined_in_rag_core_errors() -> None:
    strays = []
    for name in _product_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == name and not attr.startswith("_")
                    and not name.startswith("rag_core.errors")):
                strays.append(f"{name}.{attr}")
    assert strays == []


def test_every_concrete_error_has_its_own_typed_code() -> None:
    leaves = [cls for cls in _subclasses(RagCoreError)
              if cls.__module__.startswith(errors.__name__) and not cls.__subclasses__()]
    assert len(leaves) >= 25
    for cls in leaves:
        assert isinstance(cls.code, ErrorCode), cls
        assert cls.code is not ErrorCode.INTERNAL_ERROR, cls
    # no two leaves share a code unless one is the documented base of the other
    codes = [cls.code for cls in leaves]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_every_code_has_a_category_and_an_exit_code() -> None:
    for code in ErrorCode:
        assert isinstance(code.category, ErrorCategory)
        assert code.exit_code == EXIT_CODES[code.category]
    assert ErrorCode.INVALID_TENANT_ID.exit_code is ExitCode.INVALID_INPUT
    assert ErrorCode.DATABASE_UNAVAILABLE.exit_code is ExitCode.UNAVAILABLE
    assert ErrorCode.CROSS_TENANT_BLOCKED.exit_code is ExitCode.REFUSED
    assert ErrorCode.RATE_LIMITED.exit_code is ExitCode.LIMITED
    assert ErrorCode.INTERNAL_ERROR.exit_code is ExitCode.INTERNAL


@pytest.mark.parametrize(("error", "value"), [
    (errors.InvalidTenantIdError("tn_nope"), "tn_nope"),
    (errors.ConfigurationError("RAG_X", 42, "too big"), "42"),
    (errors.SourceError("/srv/docs", "no such file or folder"), "/srv/docs"),
    (errors.EmbeddingModelUnavailableError("m", "/models/x"), "/models/x"),
])
def test_errors_name_the_offending_value(error: RagCoreError, value: str) -> None:
    assert value in str(error)


def test_importing_the_package_face_and_config_stays_light() -> None:
    code = ("import sys, rag_core, rag_core.config, rag_core.errors, rag_core.codes; "
            "heavy = [m for m in ('groq', 'httpx', 'tenacity', 'redis', 'prometheus_client', "
            "'psycopg', 'torch', 'fastembed', 'prefect') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert rag_core.RagCoreError is RagCoreError
