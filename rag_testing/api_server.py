"""The HTTP service on 127.0.0.1 inside a test process: a real uvicorn server on a free port,
in a thread, serving :func:`rag_core.api.app.create_app` over a platform the test owns.

Real HTTP end to end (sockets, the HTTP parser, the ASGI lifespan, SSE streaming); only
the process model differs from ``rag serve`` (one worker, in a thread), which the tests of
several workers cover by running ``rag serve`` itself.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from rag_core.api.app import create_app
from rag_core.composition import Platform


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """``with ApiServer(platform) as server: httpx.get(server.url + "/healthz")``."""

    def __init__(self, platform: Platform, *, run_batches: bool = True,
                 startup_timeout_s: float = 120.0) -> None:
        self.platform = platform
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(platform.settings, platform=platform, run_batches=run_batches)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api-server",
                                        daemon=True)
        self._startup_timeout_s = startup_timeout_s

    def start(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the API server stopped during start-up (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not start in "
                                   f"{self._startup_timeout_s} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
