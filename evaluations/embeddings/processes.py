"""The parent's side of the backend workers (:mod:`evaluations.embeddings.worker`): start
one process per backend, send it JSON-line requests, read its answers with a timeout, and
show the tail of its stderr when it fails."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from evaluations.common.paths import SOURCE_ROOT
from rag_core.common.offline import HUB_OFFLINE, offline_environment
from rag_core.errors import BenchmarkError

if TYPE_CHECKING:
    from evaluations.embeddings.progress import Progress
    from evaluations.embeddings.workload import TextSet

__all__ = ["WORKER_MODULE", "WorkerProcess", "rotated", "start_workers", "worker_environment"]

WORKER_MODULE = "evaluations.embeddings.worker"
FloatMatrix = npt.NDArray[np.float32]


def worker_environment() -> dict[str, str]:
    """The child's environment: this one, offline (hub switches forced on), no progress
    bars, and the checkout on ``PYTHONPATH`` so ``evaluations`` imports uninstalled too."""
    env = offline_environment()
    env.update(HUB_OFFLINE)
    env["TQDM_DISABLE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH"))
                                        if p)
    return env


def rotated(items: Sequence[str], by: int) -> list[str]:
    """``items`` shifted left by ``by`` (the backend order of one round)."""
    shift = by % len(items)
    return list(items[shift:]) + list(items[:shift])


class WorkerProcess:
    """One backend in its own process; ``ready`` is its first answer (load timings)."""

    def __init__(self, backend: str, state_dir: Path, log_path: Path, timeout_s: float) -> None:
        self.backend = backend
        self.log_path = log_path
        self.timeout_s = timeout_s
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, backend, str(state_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            encoding="utf-8", env=worker_environment(), cwd=SOURCE_ROOT)
        try:
            self.ready = self._read()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - started

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        line = self.proc.stdout.readline() if readable else ""
        if not line:
            self._fail("no answer" if readable else f"no answer within {self.timeout_s:.0f} s")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            self._fail(str(answer["error"]))
        return answer

    def _fail(self, reason: str) -> None:
        self._log.flush()
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            tail = ""
        raise BenchmarkError(
            f"{self.backend} worker (pid {self.proc.pid}): {reason}; its stderr ends with:\n"
            f"{tail}", value=self.backend)

    def request(self, **payload: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail("the process is gone")
        return self._read()

    def peak_rss_bytes(self) -> int:
        return int(self.request(op="stats")["peak_rss_bytes"])

    def embed(self, text_set: TextSet, batch_size: int, save: Path | None = None,
              start: int = 0, stop: int | None = None) -> tuple[float, float]:
        """Wall seconds of the ``embed_*`` call and the CPU seconds the worker spent in it."""
        answer = self.request(op="embed", texts=str(text_set.path), kind=text_set.kind,
                              batch_size=batch_size, save=str(save) if save else None,
                              start=start, stop=stop)
        return float(answer["seconds"]), float(answer["cpu_s"])

    def embed_in_slices(self, text_set: TextSet, batch_size: int, save: Path,
                        slice_size: int, progress: Progress | None = None) -> float:
        """Embed a large set in slices (for progress), save it whole; returns wall seconds."""
        parts: list[FloatMatrix] = []
        seconds = 0.0
        total = len(text_set.texts)
        part = save.with_suffix(".part.npy")
        for start in range(0, total, slice_size):
            stop = min(start + slice_size, total)
            seconds += self.embed(text_set, batch_size, part, start, stop)[0]
            parts.append(np.load(part))
            if progress:
                progress.note(f"{text_set.name} {self.backend}: {stop}/{total}")
        np.save(save, np.concatenate(parts) if parts else np.empty((0, 0), np.float32))
        part.unlink(missing_ok=True)
        return seconds

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._log.close()


@contextmanager
def start_workers(backends: Sequence[str], state_dir: Path, workdir: Path, tag: str,
                  timeout_s: float, on_start: Callable[[WorkerProcess], None] | None = None,
                  ) -> Iterator[dict[str, WorkerProcess]]:
    """Start one worker per backend, one after the other (never two loading at once)."""
    started: dict[str, WorkerProcess] = {}
    try:
        for backend in backends:
            worker = WorkerProcess(backend, state_dir, workdir / f"worker-{tag}-{backend}.log",
                                   timeout_s)
            started[backend] = worker
            if on_start is not None:
                on_start(worker)
        yield started
    finally:
        for worker in started.values():
            worker.close()
