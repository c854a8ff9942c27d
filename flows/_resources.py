"""The platform of this worker process, shared by the tasks of every flow run in it.

A Prefect process worker runs each flow run in a fresh process; the tasks of that run share
one :class:`~rag_core.composition.Platform` (one pool, one model), built on first use by the
composition root and closed when the process exits.
"""

from __future__ import annotations

import atexit
import threading

from rag_core.common.offline import apply_offline_environment
from rag_core.composition import Platform
from rag_core.config import get_settings

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
