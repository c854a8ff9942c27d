"""``rag serve``: the HTTP service, several uvicorn worker processes on one port.

uvicorn's own supervisor runs the workers (``--workers``) and replaces one that dies; each
worker builds its own platform from the same settings (:func:`rag_core.api.app.create_app`).
With more than one worker the Prometheus metrics go through prometheus_client's
multiprocess mode: a fresh folder under the state folder, named by
``PROMETHEUS_MULTIPROC_DIR`` (the library's own convention, hence set in the environment the
workers inherit), so ``/metrics`` answers the sum over workers whichever one serves it.
"""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]

# uvicorn's supervisor kills a worker that leaves a ping unanswered this long, and a worker
# answers only once its spawned interpreter has imported the platform (uvicorn's 5 s default
# is less than that import takes on a busy 2-core machine: every worker was killed during
# start-up, forever). A worker that dies is replaced at once whatever this says; only a
# wedged one waits this long.
WORKER_HEALTHCHECK_S = 120


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@fail_cleanly
def serve(host: Annotated[str | None, typer.Option(help="address to listen on "
                                                        "(RAG_API__HOST)")] = None,
          port: Annotated[int | None, typer.Option(help="port (RAG_API__PORT)")] = None,
          workers: Annotated[int | None, typer.Option(help="worker processes "
                                                           "(RAG_API__WORKERS)")] = None,
          as_json: JsonFlag = False) -> None:
    """Serve the HTTP API and the batch page until interrupted (Ctrl-C)."""
    import uvicorn  # only this command needs the server

    settings = get_settings()
    host = host or settings.api.host
    port = port if port is not None else settings.api.port
    workers = workers or settings.api.workers
    # Start the embedded servers once, here, rather than racing in every worker.
    Platform(settings).ensure_services()
    if workers > 1:
        metrics_dir = settings.state_dir / "metrics" / f"serve-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # a previous run's samples
        metrics_dir.mkdir(parents=True, mode=0o700)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    console.print(f"serving on http://{host}:{port}/ (batch page /ui/, API docs /docs, "
                  f"{workers} worker{'s' if workers > 1 else ''})", highlight=False)
    uvicorn.run("rag_core.api.app:create_app", factory=True, host=host, port=port,
                workers=workers, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", timeout_graceful_shutdown=10,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)
    if as_json:
        emit_json({"ok": True, "host": host, "port": port, "workers": workers})
