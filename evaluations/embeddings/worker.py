"""One embedding backend in its own process, driven by ``evaluations.embeddings.processes``.

Run as ``python -m evaluations.embeddings.worker BACKEND STATE_DIR``. The worker loads the
backend through the product's registry, embeds one short text and then reports ``ready``
(so the parent measures process start to first embedding), then answers JSON-line
requests on stdin:

* ``{"op": "embed", "texts": FILE, "kind": "passages"|"queries", "batch_size": N,
  "save": FILE|null, "start": I, "stop": J}`` embeds the JSON list of strings in FILE (read
  once, then cached; optionally only the slice ``[I:J]``) and
  answers ``{"seconds": ..., "cpu_s": ...}``, the wall time of the ``embed_*`` call alone and
  the CPU time all threads of the process spent in it; with ``save`` the vectors are written
  there as ``.npy``;
* ``{"op": "stats"}`` answers the process's peak and current resident set size;
* ``{"op": "exit"}`` (or end of input) ends the process.

Every backend runs in its own process so that peak RSS (``ru_maxrss``) is the backend's own
and nothing (thread pools, allocator arenas, imported libraries) is shared between them.
Protocol answers go to the original standard output; everything else a library prints is
sent to standard error so it cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

FIRST_TEXT = "How fast does this backend embed its first text?"


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports ``ru_maxrss`` in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _answer(channel: TextIO, payload: dict[str, Any]) -> None:
    channel.write(json.dumps(payload) + "\n")
    channel.flush()


def serve(backend: str, state_dir: Path, channel: TextIO) -> None:
    started = time.perf_counter()
    # imported here, not at the top, so import_s covers every import of rag_core
    from rag_core.common.offline import apply_offline_environment

    apply_offline_environment()  # the parent sets it too; this covers a worker run by hand
    from rag_core.embeddings import load_embedder

    imported = time.perf_counter()
    embedder = load_embedder(backend, state_dir=state_dir)
    loaded = time.perf_counter()
    embedder.embed_queries([FIRST_TEXT], batch_size=1)
    first = time.perf_counter()
    _answer(channel, {
        "ready": True, "backend": embedder.backend, "model_version": embedder.model_version,
        "pid": os.getpid(), "import_s": imported - started, "load_s": loaded - imported,
        "first_embed_s": first - loaded, "peak_rss_bytes": peak_rss_bytes(),
        "rss_bytes": current_rss_bytes(),
    })

    texts_by_file: dict[str, list[str]] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        if op == "exit":
            break
        if op == "stats":
            _answer(channel, {"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": current_rss_bytes()})
            continue
        if op != "embed":
            _answer(channel, {"error": f"unknown op {op!r}"})
            continue
        path = str(request["texts"])
        if path not in texts_by_file:
            texts_by_file[path] = json.loads(Path(path).read_text(encoding="utf-8"))
        texts = texts_by_file[path][request.get("start", 0):request.get("stop")]
        embed = embedder.embed_queries if request["kind"] == "queries" else \
            embedder.embed_passages
        batch_size = int(request["batch_size"])
        begin, begin_cpu = time.perf_counter(), time.process_time()
        vectors = embed(texts, batch_size=batch_size)
        seconds, cpu_s = time.perf_counter() - begin, time.process_time() - begin_cpu
        if request.get("save"):
            import numpy as np

            np.save(str(request["save"]), vectors)
        _answer(channel, {"seconds": seconds, "cpu_s": cpu_s, "n": len(texts)})


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m evaluations.embeddings.worker BACKEND STATE_DIR",
              file=sys.stderr)
        return 2
    # keep the protocol channel private: anything printed by a library goes to stderr
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        serve(argv[0], Path(argv[1]), channel)
    except Exception as exc:  # report to the parent, which shows it with the stderr tail
        traceback.print_exc()
        _answer(channel, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
