"""Flow runs handed to a work pool and waited for: how one ingestion job spreads over workers.

A flow run that wants help submits runs of another deployment (``run_deployment`` with
``timeout=0``: linked as its subflows, not waited for), does its own share of the work, then
settles them here. A run that no worker has picked up by then is cancelled: the job's queue
had nothing left for it (the caller's own share ends only when no item is unclaimed), and
waiting for a worker that may never come (a pool with no free slot) would hang the caller.
A run a worker has picked up is waited for, so the caller's summary counts its items.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelled

# How often a waiting caller asks the API about the runs it waits for.
_POLL_S = 2.0


def submit_runs(deployment: str, parameters: dict[str, Any], count: int,
                name_prefix: str) -> list[str]:
    """Submit ``count`` runs of ``deployment`` (``"flow/deployment"``) without waiting for
    them; their ids."""
    ids = []
    for number in range(1, count + 1):
        run = run_deployment(deployment, parameters=parameters, timeout=0,
                             flow_run_name=f"{name_prefix}-{number}")
        assert isinstance(run, FlowRun)  # the synchronous variant: called from a sync task
        ids.append(str(run.id))
    return ids


def wait_started(run_ids: list[str], timeout_s: float) -> int:
    """Wait (up to ``timeout_s``) until every run has left the scheduled state (a worker
    took it, or it ended); how many did. Lets a caller that wants its job shared from its
    first item give the workers time to start their flow-run processes."""
    ids = [UUID(run_id) for run_id in run_ids]
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in ids]
            started = sum(run.state is not None and not run.state.is_scheduled()
                          and not run.state.is_pending() for run in runs)
            if started == len(ids) or time.monotonic() >= deadline:
                return started
            time.sleep(_POLL_S / 4)


def settle_runs(run_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Cancel the runs no worker has picked up, wait (up to ``timeout_s``) for the others to
    end; what became of each (name, final state, the worker that ran it)."""
    ids = [UUID(run_id) for run_id in run_ids]
    with get_client(sync_client=True) as client:
        for run_id in ids:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_scheduled():
                # Refused when a worker takes it meanwhile: then it is waited for below.
                client.set_flow_run_state(
                    run_id, Cancelled(message="not picked up by a worker before the job's "
                                              "queue was empty"))
        deadline = time.monotonic() + timeout_s
        runs = [client.read_flow_run(run_id) for run_id in ids]
        while not all(_final(run) for run in runs) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            runs = [client.read_flow_run(run_id) for run_id in ids]
    return [_outcome(run) for run in runs]


def _final(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final()


def _outcome(run: FlowRun) -> dict[str, Any]:
    return {"flow_run_id": str(run.id), "name": run.name,
            "state": run.state.type.value if run.state is not None else None,
            "worker": run.labels.get("prefect.worker.name")}
