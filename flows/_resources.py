"""The platform of this worker process, shared by the tasks of every flow run in it.

A Prefect process worker runs each flow run in a fresh process; the tasks of that run share
one :class:`~rag_core.composition.Platform` (one pool, one model), built on first use by the
composition root and closed when the process exits.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from rag_core.codes import ErrorCategory
from rag_core.common.offline import apply_offline_environment
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.errors import RagCoreError

_lock = threading.Lock()
_platform: Platform | None = None


def platform() -> Platform:
    """This process's platform (built once, from the environment's settings)."""
    global _platform
    with _lock:
        if _platform is None:
            apply_offline_environment()
            _platform = Platform(get_settings())
            atexit.register(_platform.close)
        return _platform


def retry_unless_refused(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """A task's ``retry_condition_fn``: retry transient failures, not a caller's bad input
    or a refusal (a path outside the roots is outside on every attempt)."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, RagCoreError)
                and error.code.category in (ErrorCategory.INVALID_INPUT, ErrorCategory.REFUSED))
