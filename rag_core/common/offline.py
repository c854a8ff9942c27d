"""The offline, no-telemetry environment every process of the platform runs with.

Model hubs and telemetry endpoints are unreachable here (and unwanted in production): a
library that tries them hangs for tens of seconds before failing. The variables are set in
this one place (``scripts/env.sh`` mirrors it for shells); a user's own value wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

OFFLINE_ENVIRONMENT: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "RAGAS_DO_NOT_TRACK": "true",
}
#: The two that are forced whatever the user set: a hub download can never succeed here.
HUB_OFFLINE: Mapping[str, str] = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def apply_offline_environment() -> None:
    """Set the offline variables in this process (and its children) unless already set."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def forbid_hub_downloads() -> None:
    """Force the hub switches on, before any code that could load weights from a hub."""
    os.environ.update(HUB_OFFLINE)


def offline_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: this process's environment) with the offline variables."""
    env = dict(os.environ if base is None else base)
    for name, value in OFFLINE_ENVIRONMENT.items():
        env.setdefault(name, value)
    return env
