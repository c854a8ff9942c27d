"""The measurements of ``rag bench embeddings``: cold load and peak RSS in fresh processes,
then throughput rounds and the vectors for agreement and retrieval in long-lived workers."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.embeddings.config import EmbeddingBenchmarkConfig
from evaluations.embeddings.processes import WorkerProcess, rotated, start_workers
from evaluations.embeddings.progress import Progress
from evaluations.embeddings.workload import Workload

__all__ = ["LoadSample", "LoadSnapshot", "Sample", "WarmResult", "measure_cold_loads",
           "measure_warm"]


@dataclass(frozen=True)
class LoadSample:
    """One fresh process: start to first embedding and its memory right then; for a memory
    probe also its peak RSS after embedding two batches of the longest chunks."""

    backend: str
    round: int
    startup_s: float
    import_s: float
    load_s: float
    first_embed_s: float
    load_rss_bytes: int
    batch_size: int | None = None
    peak_rss_bytes: int | None = None

    @classmethod
    def of(cls, worker: WorkerProcess, round_: int, batch_size: int | None = None,
           peak_rss_bytes: int | None = None) -> LoadSample:
        ready = worker.ready
        return cls(worker.backend, round_, worker.startup_s, float(ready["import_s"]),
                   float(ready["load_s"]), float(ready["first_embed_s"]),
                   int(ready["peak_rss_bytes"]), batch_size, peak_rss_bytes)


def measure_cold_loads(config: EmbeddingBenchmarkConfig, workload: Workload, state_dir: Path,
                       progress: Progress | None = None) -> list[LoadSample]:
    """Fresh processes, one at a time: per round, per batch size, per backend (order
    rotating). Each is a cold-load sample and measures the peak RSS of embedding two batches
    of the longest chunks at that batch size (``ru_maxrss`` only grows, hence one process per
    batch size). The warm workers of :func:`measure_warm` add one more cold-load sample."""
    samples: list[LoadSample] = []
    for round_ in range(config.probe_rounds):
        for bs_index, batch_size in enumerate(config.batch_sizes):
            for backend in rotated(config.backends, round_ + bs_index):
                log = workload.workdir / f"probe-{round_}-{batch_size}-{backend}.log"
                worker = WorkerProcess(backend, state_dir, log, config.request_timeout_s)
                try:
                    worker.embed(workload.longest, batch_size, stop=2 * batch_size)
                    peak = worker.peak_rss_bytes()
                finally:
                    worker.close()
                samples.append(LoadSample.of(worker, round_, batch_size, peak))
                if progress:
                    progress.step(f"probe {backend} batch {batch_size}: first embedding after "
                                  f"{worker.startup_s:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
    return samples


@dataclass(frozen=True)
class Sample:
    """One throughput measurement: one text set, one backend, one batch size, one round."""

    round: int
    backend: str
    batch_size: int
    kind: str
    seconds: float
    cpu_s: float
    texts: int
    tokens: int


@dataclass(frozen=True)
class LoadSnapshot:
    """The machine's load average at one moment of the run."""

    at: str
    one: float
    five: float
    fifteen: float

    @classmethod
    def now(cls, label: str) -> LoadSnapshot:
        try:
            one, five, fifteen = os.getloadavg()
        except OSError:
            one = five = fifteen = math.nan
        return cls(label, round(one, 2), round(five, 2), round(fifteen, 2))

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "1m": self.one, "5m": self.five, "15m": self.fifteen}


@dataclass
class WarmResult:
    samples: list[Sample]
    load_samples: list[LoadSample]
    peak_rss_bytes: dict[str, int]
    final_peak_rss_bytes: dict[str, int]
    vectors: dict[str, dict[str, Path]]
    corpus_embed_s: dict[str, float]
    load_average: list[LoadSnapshot]
    model_versions: dict[str, str]


def measure_warm(config: EmbeddingBenchmarkConfig, workload: Workload, state_dir: Path,
                 progress: Progress | None = None) -> WarmResult:
    """Throughput rounds, peak RSS, then the vectors for agreement and retrieval."""
    workdir = workload.workdir
    load_samples: list[LoadSample] = []
    load_average = [LoadSnapshot.now("start")]
    last_round = config.probe_rounds

    def started(worker: WorkerProcess) -> None:
        load_samples.append(LoadSample.of(worker, last_round))
        if progress:
            progress.step(f"started {worker.backend} worker: {worker.startup_s:.1f} s")

    order = rotated(config.backends, last_round)
    samples: list[Sample] = []
    with start_workers(order, state_dir, workdir, "warm", config.request_timeout_s,
                       started) as workers:
        for worker in workers.values():
            for batch_size in config.batch_sizes:
                worker.embed(workload.warmup, batch_size)
        if progress:
            progress.step("warm-up done")

        for round_ in range(config.rounds):
            load_average.append(LoadSnapshot.now(f"round {round_ + 1}"))
            for bs_index, batch_size in enumerate(config.batch_sizes):
                for backend in rotated(config.backends, round_ + bs_index):
                    worker = workers[backend]
                    for text_set in workload.throughput_sets():
                        seconds, cpu_s = worker.embed(text_set, batch_size)
                        samples.append(Sample(round_, backend, batch_size, text_set.kind,
                                              seconds, cpu_s, len(text_set.texts),
                                              text_set.total_tokens))
                    if config.settle_s:
                        time.sleep(config.settle_s)
                    if progress:
                        texts = len(workload.passages.texts) + len(workload.queries.texts)
                        spent = sum(s.seconds for s in samples[-2:])
                        progress.step(f"round {round_ + 1}/{config.rounds} batch {batch_size} "
                                      f"{backend}: {texts / spent:.1f} texts/s")
        load_average.append(LoadSnapshot.now("end of throughput"))
        peak = {b: w.peak_rss_bytes() for b, w in workers.items()}

        vectors: dict[str, dict[str, Path]] = {}
        for backend, worker in workers.items():
            saved: dict[str, Path] = {}
            for text_set in (workload.passages, workload.queries, workload.long_texts):
                if text_set.texts:
                    saved[text_set.name] = workdir / f"{backend}-{text_set.name}.npy"
                    worker.embed(text_set, config.default_batch_size, saved[text_set.name])
            vectors[backend] = saved
            if progress:
                progress.step(f"agreement vectors {backend}")

        corpus_s: dict[str, float] = {}
        for backend in rotated(config.backends, config.rounds):
            worker = workers[backend]
            docs_path = workdir / f"{backend}-eval_docs.npy"
            corpus_s[backend] = worker.embed_in_slices(
                workload.eval_docs, config.default_batch_size, docs_path, 512, progress)
            queries_path = workdir / f"{backend}-eval_queries.npy"
            worker.embed(workload.eval_queries, config.default_batch_size, queries_path)
            vectors[backend] |= {"eval_docs": docs_path, "eval_queries": queries_path}
            if progress:
                progress.step(f"retrieval corpus {backend}: {len(workload.eval_docs.texts)} "
                              f"docs in {corpus_s[backend]:.1f} s")
        final_peak = {b: w.peak_rss_bytes() for b, w in workers.items()}
        versions = {b: str(w.ready.get("model_version")) for b, w in workers.items()}
    load_average.append(LoadSnapshot.now("end"))
    return WarmResult(samples, load_samples, peak, final_peak, vectors, corpus_s, load_average,
                      versions)
