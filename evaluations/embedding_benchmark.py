"""``rag bench embeddings``: FastEmbed fp32, FastEmbed int8 and sentence-transformers on the
same all-MiniLM-L6-v2 weights, measured in one run on this machine.

What is measured, and how:

* **Throughput** (texts/s and tokens/s) at several batch sizes, on real text: SciFact
  abstracts chunked exactly as ingestion chunks them (``chunk_document``) plus short SciFact
  claims as query texts. Every backend runs in its own long-lived worker process
  (``evaluations._embed_worker``); the rounds are interleaved (each round measures every batch
  size on every backend, the backend order rotating from round to round) so that a noisy
  neighbour or thermal drift hits all backends alike. Reported: median over rounds and the
  spread (min/max and quartiles). Speed-ups are the median of the per-round ratios against
  sentence-transformers, so drift between rounds cancels out.
* **Cold load** (process start to first embedding) and **peak RSS**, each backend in its own
  fresh process (``ru_maxrss`` of that process), so nothing is shared between backends.
* **Agreement**: cosine of the FastEmbed fp32 and int8 vectors with the sentence-transformers
  vectors (min and mean) on chunks, queries, abstracts longer than the 256-token window and
  the retrieval corpus.
* **Retrieval quality**: nDCG@10 on SciFact (BEIR test split) with exact cosine over whole
  documents (``title + " " + text``, truncated at the model window as in MTEB) computed in
  numpy, scored with ranx (``ndcg@10`` is Järvelin's linear-gain nDCG, the definition of
  pytrec_eval/trec_eval ``ndcg_cut`` used by MTEB). No database is involved, so the numbers
  isolate the model. ``quick`` mode uses a subset of queries, their judged documents and a
  few hundred distractors, so its nDCG is NOT comparable to the full-corpus number.

The results go to ``reports/embeddings/<timestamp>/`` (``report.md``, ``results.json``,
``throughput.png``) via :mod:`evaluations.reports`.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, field_validator, model_validator

from evaluations.metrics import evaluate_run
from evaluations.reports import REPO_ROOT, Report
from rag_core.embeddings import (
    MAX_TOKENS,
    SPECIAL_TOKENS_PER_INPUT,
    ensure_models,
    load_tokenizer,
    onnx_export_dir,
)
from rag_core.errors import RagCoreError
from rag_core.ingestion.chunking import ChunkingPolicy, chunk_document

__all__ = [
    "BACKENDS",
    "GOALS",
    "REFERENCE",
    "BenchmarkOutcome",
    "EmbeddingBenchmarkConfig",
    "EmbeddingBenchmarkError",
    "LoadSample",
    "Progress",
    "WarmResult",
    "Workload",
    "as_dict",
    "measure_cold_loads",
    "measure_warm",
    "planned_steps",
    "prepare_workload",
    "run_embedding_benchmark",
    "summarize",
    "write_report",
]

BACKENDS = ("fastembed", "fastembed-int8", "sentence-transformers")
REFERENCE = "sentence-transformers"
FP32 = "fastembed"
INT8 = "fastembed-int8"
DATASET_DIR = REPO_ROOT / "data" / "scifact"
KINDS = ("passages", "queries")
FloatMatrix = npt.NDArray[np.float32]

# (key, description, metric key in the results, comparison, target)
GOALS: tuple[tuple[str, str, str, str, float], ...] = (
    ("seed_fastembed_speedup_1.3x",
     "seed bar: FastEmbed fp32 >= 1.3x sentence-transformers texts/s (30% faster)",
     "fastembed_speedup", ">=", 1.3),
    ("fastembed_speedup_1.5x", "our goal: FastEmbed fp32 >= 1.5x sentence-transformers texts/s",
     "fastembed_speedup", ">=", 1.5),
    ("fastembed_rss_0.6x",
     "our goal: FastEmbed fp32 peak RSS <= 0.6x sentence-transformers (default batch size)",
     "fastembed_rss_ratio", "<=", 0.6),
    ("int8_speedup_2.5x", "our goal: FastEmbed int8 >= 2.5x sentence-transformers texts/s",
     "int8_speedup", ">=", 2.5),
    ("int8_ndcg_loss_0.005",
     "our goal: FastEmbed int8 loses <= 0.005 nDCG@10 against sentence-transformers",
     "int8_ndcg_loss", "<=", 0.005),
)


class EmbeddingBenchmarkError(RagCoreError):
    """The benchmark could not run (a worker failed, the data set is missing, ...)."""


class EmbeddingBenchmarkConfig(BaseModel, frozen=True):
    """How much to measure. ``preset(quick=...)`` gives the two standard sizes."""

    quick: bool = False
    batch_sizes: list[int] = Field(default_factory=lambda: [8, 32, 64])
    default_batch_size: int = Field(default=32, ge=1, le=1024,
                                    description="batch size of the headline speed-ups")
    rounds: int = Field(default=5, ge=1, le=100, description="interleaved throughput rounds")
    probe_rounds: int = Field(default=1, ge=1, le=20, description=(
        "rounds of fresh processes (one per backend and batch size) for cold load and "
        "peak RSS"))
    passages: int = Field(default=240, ge=1, description="chunk texts in the throughput set")
    queries: int = Field(default=80, ge=1, description="query texts in the throughput set")
    long_texts: int = Field(default=64, ge=0,
                            description="abstracts longer than the window, for agreement")
    eval_queries: int | None = Field(default=None, ge=1,
                                     description="SciFact test queries for nDCG (None = all)")
    distractors: int | None = Field(default=None, ge=0,
                                    description="unjudged docs added (None = whole corpus)")
    warmup_texts: int = Field(default=32, ge=1)
    settle_s: float = Field(default=0.25, ge=0,
                            description="pause between measurements (idle thread pools sleep)")
    seed: int = 13
    dataset_dir: Path = DATASET_DIR
    chunking: ChunkingPolicy = Field(default_factory=ChunkingPolicy)
    backends: tuple[str, ...] = BACKENDS
    request_timeout_s: float = Field(default=3600.0, gt=0)

    @field_validator("batch_sizes")
    @classmethod
    def _valid_batch_sizes(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 or b > 1024 for b in value):
            raise ValueError("batch sizes must be between 1 and 1024")
        return sorted(set(value))

    @field_validator("backends")
    @classmethod
    def _valid_backends(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if set(value) != set(BACKENDS) or len(value) != len(BACKENDS):
            raise ValueError(f"the benchmark compares exactly {', '.join(BACKENDS)}")
        return value

    @model_validator(mode="after")
    def _default_is_measured(self) -> Self:
        if self.default_batch_size not in self.batch_sizes:
            object.__setattr__(self, "batch_sizes",
                               sorted({*self.batch_sizes, self.default_batch_size}))
        return self

    @classmethod
    def preset(cls, quick: bool = False, **overrides: Any) -> EmbeddingBenchmarkConfig:
        """Full mode (all 300 queries over the whole corpus, 5 rounds) or quick mode."""
        values: dict[str, Any] = {"quick": quick}
        if quick:
            values.update(rounds=3, probe_rounds=1, passages=96, queries=32, long_texts=16,
                          eval_queries=50, distractors=300)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def full_retrieval(self) -> bool:
        return self.eval_queries is None and self.distractors is None

    def describe(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["dataset_dir"] = _relative(self.dataset_dir)
        return data


# --- progress --------------------------------------------------------------------------------
ProgressCallback = Callable[[str, int, int], None]
"""``(what was just done, steps done, steps planned)``."""


class Progress:
    """Counts finished steps and tells a callback (a Rich bar, a Prefect logger)."""

    def __init__(self, total: int, callback: ProgressCallback | None = None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def step(self, description: str) -> None:
        self.done += 1
        self.note(description)

    def note(self, description: str) -> None:
        """Say what is going on without finishing a step (long steps)."""
        if self._callback is not None:
            self._callback(description, self.done, max(self.total, self.done))


def planned_steps(config: EmbeddingBenchmarkConfig) -> int:
    backends = len(config.backends)
    return (config.probe_rounds * len(config.batch_sizes) * backends  # cold-load/RSS probes
            + backends  # warm workers start (their start is a cold-load sample too)
            + 1  # warm-up
            + config.rounds * len(config.batch_sizes) * backends
            + backends  # agreement vectors
            + backends  # retrieval corpus
            + 1)  # scoring


# --- workload --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextSet:
    """Texts written to a JSON file the workers read; ``tokens`` are model input tokens
    (wordpieces + [CLS]/[SEP], truncated at the 256-token window, no padding)."""

    name: str
    kind: str
    path: Path
    texts: list[str]
    tokens: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


@dataclass(frozen=True)
class Workload:
    passages: TextSet
    queries: TextSet
    long_texts: TextSet
    warmup: TextSet
    longest: TextSet  # the longest chunks first: a memory probe embeds 2 batches of them
    eval_docs: TextSet
    eval_queries: TextSet
    eval_doc_ids: list[str]
    eval_query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    workdir: Path
    description: dict[str, Any] = field(default_factory=dict)

    def throughput_sets(self) -> tuple[TextSet, TextSet]:
        return self.passages, self.queries


def _model_tokens(counter: Callable[[str], int], text: str) -> int:
    return min(counter(text) + SPECIAL_TOKENS_PER_INPUT, MAX_TOKENS)


def _read_corpus(dataset_dir: Path) -> list[dict[str, Any]]:
    path = dataset_dir / "corpus.jsonl.gz"
    if not path.is_file():
        path = dataset_dir / "corpus.jsonl"
    if not path.is_file():
        raise EmbeddingBenchmarkError(f"no BEIR corpus.jsonl[.gz] in {dataset_dir}")
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _read_queries(dataset_dir: Path) -> dict[str, str]:
    with open(dataset_dir / "queries.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {str(row["_id"]): str(row["text"]) for row in rows}


def _read_qrels(dataset_dir: Path, split: str = "test") -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    lines = (dataset_dir / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        if not line.strip():
            continue
        query_id, doc_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


def _document_text(doc: dict[str, Any]) -> str:
    """What MTEB embeds for a BEIR document: ``title + " " + text``, stripped."""
    return f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()


def prepare_workload(config: EmbeddingBenchmarkConfig, state_dir: Path,
                     workdir: Path) -> Workload:
    """Export the ONNX models if needed, pick the texts and write them where workers read."""
    ensure_models(state_dir)
    tokenizer = load_tokenizer(onnx_export_dir(state_dir) / "fp32")
    count = tokenizer.count_tokens
    corpus = _read_corpus(config.dataset_dir)
    queries = _read_queries(config.dataset_dir)
    qrels = _read_qrels(config.dataset_dir)
    rng = random.Random(config.seed)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    workdir.mkdir(parents=True, exist_ok=True)

    def text_set(name: str, kind: str, texts: list[str]) -> TextSet:
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(texts), encoding="utf-8")
        return TextSet(name, kind, path, texts, [_model_tokens(count, t) for t in texts])

    # throughput: chunks of shuffled abstracts, as ingestion makes them
    chunks: list[str] = []
    chunked_docs = 0
    for index in order:
        if len(chunks) >= config.passages:
            break
        doc = corpus[index]
        chunks += [c.text for c in chunk_document(doc.get("title") or "", doc.get("text") or "",
                                                  tokenizer, config.chunking)]
        chunked_docs += 1
    chunks = chunks[:config.passages]
    query_ids = sorted(queries)
    rng.shuffle(query_ids)
    short = [queries[q] for q in query_ids[:config.queries]]

    # agreement beyond the window: whole abstracts the model has to truncate
    long: list[str] = []
    for index in reversed(order):
        if len(long) >= config.long_texts:
            break
        text = _document_text(corpus[index])
        if count(text) + SPECIAL_TOKENS_PER_INPUT > MAX_TOKENS:
            long.append(text)

    # retrieval: the BEIR test split, whole or a judged subset plus distractors
    judged_queries = sorted(q for q in qrels if q in queries)
    if config.eval_queries is not None and config.eval_queries < len(judged_queries):
        eval_query_ids = sorted(rng.sample(judged_queries, config.eval_queries))
    else:
        eval_query_ids = judged_queries
    by_id = {str(doc["_id"]): doc for doc in corpus}
    missing = sorted({d for q in eval_query_ids for d in qrels[q]} - by_id.keys())
    if missing:
        raise EmbeddingBenchmarkError(f"qrels name {len(missing)} documents missing from the "
                                      f"corpus, e.g. {missing[:3]}")
    if config.distractors is None:
        eval_doc_ids = [str(doc["_id"]) for doc in corpus]
    else:
        judged = {d for q in eval_query_ids for d in qrels[q]}
        others = [str(corpus[i]["_id"]) for i in order if str(corpus[i]["_id"]) not in judged]
        eval_doc_ids = sorted(judged) + others[:config.distractors]
    eval_qrels = {q: dict(qrels[q]) for q in eval_query_ids}

    workload = Workload(
        passages=text_set("passages", "passages", chunks),
        queries=text_set("queries", "queries", short),
        long_texts=text_set("long_texts", "passages", long),
        warmup=text_set("warmup", "passages", chunks[:config.warmup_texts]),
        longest=text_set("longest", "passages", sorted(chunks, key=count, reverse=True)),
        eval_docs=text_set("eval_docs", "passages", [_document_text(by_id[d])
                                                      for d in eval_doc_ids]),
        eval_queries=text_set("eval_queries", "queries", [queries[q] for q in eval_query_ids]),
        eval_doc_ids=eval_doc_ids, eval_query_ids=eval_query_ids, qrels=eval_qrels,
        workdir=workdir)
    workload.description.update({
        "passages": _set_facts(workload.passages) | {"from_documents": chunked_docs},
        "queries": _set_facts(workload.queries),
        "long_texts": _set_facts(workload.long_texts) | {
            "wordpieces_mean": round(statistics.fmean(count(t) for t in long), 1) if long
            else 0},
        "eval": {"queries": len(eval_query_ids), "docs": len(eval_doc_ids),
                 "judgements": sum(len(v) for v in eval_qrels.values()),
                 "docs_over_window": sum(t >= MAX_TOKENS for t in workload.eval_docs.tokens),
                 "full_corpus": config.full_retrieval,
                 "corpus_docs": len(corpus), "test_queries": len(judged_queries)},
        "chunking": config.chunking.model_dump(),
    })
    return workload


def _set_facts(text_set: TextSet) -> dict[str, Any]:
    tokens = text_set.tokens or [0]
    return {"texts": len(text_set.texts), "tokens": text_set.total_tokens,
            "tokens_mean": round(statistics.fmean(tokens), 1),
            "tokens_max": max(tokens)}


# --- worker processes ----------------------------------------------------------------------
def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                        if p)
    return env


class _Worker:
    """One backend in its own process (see ``evaluations._embed_worker``)."""

    def __init__(self, backend: str, state_dir: Path, log_path: Path, timeout_s: float) -> None:
        self.backend = backend
        self.log_path = log_path
        self.timeout_s = timeout_s
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evaluations._embed_worker", backend, str(state_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            encoding="utf-8", env=_worker_env(), cwd=REPO_ROOT)
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
        raise EmbeddingBenchmarkError(
            f"{self.backend} worker (pid {self.proc.pid}): {reason}; its stderr ends with:\n"
            f"{tail}")

    def request(self, **payload: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail("the process is gone")
        return self._read()

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
def _workers(backends: Sequence[str], state_dir: Path, workdir: Path, tag: str,
             timeout_s: float, on_start: Callable[[_Worker], None] | None = None,
             ) -> Iterator[dict[str, _Worker]]:
    """Start one worker per backend, one after the other (never two loading at once)."""
    started: dict[str, _Worker] = {}
    try:
        for backend in backends:
            worker = _Worker(backend, state_dir, workdir / f"worker-{tag}-{backend}.log",
                             timeout_s)
            started[backend] = worker
            if on_start is not None:
                on_start(worker)
        yield started
    finally:
        for worker in started.values():
            worker.close()


# --- cold load and memory --------------------------------------------------------------------
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
    def of(cls, worker: _Worker, round_: int, batch_size: int | None = None,
           peak_rss_bytes: int | None = None) -> LoadSample:
        ready = worker.ready
        return cls(worker.backend, round_, worker.startup_s, float(ready["import_s"]),
                   float(ready["load_s"]), float(ready["first_embed_s"]),
                   int(ready["peak_rss_bytes"]), batch_size, peak_rss_bytes)


def _rotated(items: Sequence[str], by: int) -> list[str]:
    shift = by % len(items)
    return list(items[shift:]) + list(items[:shift])


def measure_cold_loads(config: EmbeddingBenchmarkConfig, workload: Workload, state_dir: Path,
                       progress: Progress | None = None) -> list[LoadSample]:
    """Fresh processes, one at a time: per round, per batch size, per backend (order
    rotating). Each is a cold-load sample and measures the peak RSS of embedding two batches
    of the longest chunks at that batch size (``ru_maxrss`` only grows, hence one process per
    batch size). The warm workers of :func:`measure_warm` add one more cold-load sample."""
    samples: list[LoadSample] = []
    for round_ in range(config.probe_rounds):
        for bs_index, batch_size in enumerate(config.batch_sizes):
            for backend in _rotated(config.backends, round_ + bs_index):
                log = workload.workdir / f"probe-{round_}-{batch_size}-{backend}.log"
                worker = _Worker(backend, state_dir, log, config.request_timeout_s)
                try:
                    worker.embed(workload.longest, batch_size, stop=2 * batch_size)
                    peak = int(worker.request(op="stats")["peak_rss_bytes"])
                finally:
                    worker.close()
                samples.append(LoadSample.of(worker, round_, batch_size, peak))
                if progress:
                    progress.step(f"probe {backend} batch {batch_size}: first embedding after "
                                  f"{worker.startup_s:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
    return samples


# --- warm measurements -----------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    round: int
    backend: str
    batch_size: int
    kind: str
    seconds: float
    cpu_s: float
    texts: int
    tokens: int


@dataclass
class WarmResult:
    samples: list[Sample]
    load_samples: list[LoadSample]
    peak_rss_bytes: dict[str, int]
    final_peak_rss_bytes: dict[str, int]
    vectors: dict[str, dict[str, Path]]
    corpus_embed_s: dict[str, float]
    load_average: list[dict[str, Any]]
    model_versions: dict[str, str]


def _load_average(label: str) -> dict[str, Any]:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        one = five = fifteen = float("nan")
    return {"at": label, "1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def measure_warm(config: EmbeddingBenchmarkConfig, workload: Workload, state_dir: Path,
                 progress: Progress | None = None) -> WarmResult:
    """Throughput rounds, peak RSS, then the vectors for agreement and retrieval."""
    workdir = workload.workdir
    load_samples: list[LoadSample] = []
    load_average = [_load_average("start")]
    last_round = config.probe_rounds

    def started(worker: _Worker) -> None:
        load_samples.append(LoadSample.of(worker, last_round))
        if progress:
            progress.step(f"started {worker.backend} worker: {worker.startup_s:.1f} s")

    order = _rotated(config.backends, last_round)
    samples: list[Sample] = []
    with _workers(order, state_dir, workdir, "warm", config.request_timeout_s,
                  started) as workers:
        for worker in workers.values():
            for batch_size in config.batch_sizes:
                worker.embed(workload.warmup, batch_size)
        if progress:
            progress.step("warm-up done")

        for round_ in range(config.rounds):
            load_average.append(_load_average(f"round {round_ + 1}"))
            for bs_index, batch_size in enumerate(config.batch_sizes):
                for backend in _rotated(config.backends, round_ + bs_index):
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
        load_average.append(_load_average("end of throughput"))
        peak = {b: int(w.request(op="stats")["peak_rss_bytes"]) for b, w in workers.items()}

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
        for backend in _rotated(config.backends, config.rounds):
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
        final_peak = {b: int(w.request(op="stats")["peak_rss_bytes"])
                      for b, w in workers.items()}
        versions = {b: str(w.ready.get("model_version")) for b, w in workers.items()}
    load_average.append(_load_average("end"))
    return WarmResult(samples, load_samples, peak, final_peak, vectors, corpus_s, load_average,
                      versions)


# --- scoring ---------------------------------------------------------------------------------
def _spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": round(statistics.median(ordered), digits),
            "min": round(ordered[0], digits), "max": round(ordered[-1], digits),
            "q1": round(q1, digits), "q3": round(q3, digits)}


def _cell_samples(samples: list[Sample], backend: str, batch_size: int,
                  kind: str) -> dict[int, tuple[float, int, int, float]]:
    """Per round: (seconds, texts, tokens, cpu seconds) of one cell; kind ``all`` sums both
    kinds."""
    per_round: dict[int, tuple[float, int, int, float]] = {}
    for s in samples:
        if s.backend != backend or s.batch_size != batch_size or kind not in (s.kind, "all"):
            continue
        seconds, texts, tokens, cpu_s = per_round.get(s.round, (0.0, 0, 0, 0.0))
        per_round[s.round] = (seconds + s.seconds, texts + s.texts, tokens + s.tokens,
                              cpu_s + s.cpu_s)
    return per_round


def throughput_table(config: EmbeddingBenchmarkConfig,
                     samples: list[Sample]) -> list[dict[str, Any]]:
    rows = []
    for backend in config.backends:
        for batch_size in config.batch_sizes:
            for kind in ("all", *KINDS):
                cell = _cell_samples(samples, backend, batch_size, kind)
                if not cell:
                    continue
                texts_per_s = [t / s for s, t, _, _ in cell.values()]
                tokens_per_s = [k / s for s, _, k, _ in cell.values()]
                first = next(iter(cell.values()))
                rows.append({"backend": backend, "batch_size": batch_size, "kind": kind,
                             "texts": first[1], "tokens": first[2], "rounds": len(cell),
                             "texts_per_s": _spread(texts_per_s),
                             "tokens_per_s": _spread(tokens_per_s, 0),
                             # CPU seconds per wall second: ~threads when the worker had
                             # the cores to itself, lower when other processes took them
                             "cpu_per_wall": round(statistics.median(
                                 c / s for s, _, _, c in cell.values()), 2)})
    return rows


def speedup_table(config: EmbeddingBenchmarkConfig,
                  samples: list[Sample]) -> list[dict[str, Any]]:
    """Per-round ratio of texts/s against the reference in the same round, per cell."""
    rows = []
    for backend in config.backends:
        if backend == REFERENCE:
            continue
        for batch_size in config.batch_sizes:
            for kind in ("all", *KINDS):
                mine = _cell_samples(samples, backend, batch_size, kind)
                ref = _cell_samples(samples, REFERENCE, batch_size, kind)
                # same texts in both, so the texts/s ratio is the inverse ratio of seconds
                ratios = [ref[r][0] / mine[r][0] for r in mine if r in ref]
                if ratios:
                    rows.append({"backend": backend, "batch_size": batch_size, "kind": kind,
                                 "speedup": _spread(ratios, 3)})
    return rows


def _cosines(a: FloatMatrix, b: FloatMatrix) -> npt.NDArray[np.float64]:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    dots = np.einsum("ij,ij->i", a64, b64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    result: npt.NDArray[np.float64] = dots / np.where(norms == 0, 1.0, norms)
    return result


def agreement(config: EmbeddingBenchmarkConfig, workload: Workload,
              warm: WarmResult) -> dict[str, dict[str, dict[str, float]]]:
    """Cosine with the reference vectors, per backend and text set, plus ``all``."""
    sizes = {"passages": workload.passages, "queries": workload.queries,
             "long_texts": workload.long_texts, "eval_docs": workload.eval_docs,
             "eval_queries": workload.eval_queries}
    result: dict[str, dict[str, dict[str, float]]] = {}
    reference = warm.vectors[REFERENCE]
    for backend in config.backends:
        if backend == REFERENCE:
            continue
        per_set: dict[str, dict[str, float]] = {}
        every: list[npt.NDArray[np.float64]] = []
        for name in sizes:
            if name not in warm.vectors[backend]:
                continue
            cos = _cosines(np.load(warm.vectors[backend][name]), np.load(reference[name]))
            every.append(cos)
            per_set[name] = {"n": int(cos.size), "min": float(cos.min()),
                             "mean": float(cos.mean())}
        joined = np.concatenate(every)
        per_set["all"] = {"n": int(joined.size), "min": float(joined.min()),
                          "mean": float(joined.mean())}
        result[backend] = per_set
    return result


def retrieval(config: EmbeddingBenchmarkConfig, workload: Workload, warm: WarmResult,
              top_k: int = 100) -> dict[str, dict[str, float]]:
    """nDCG@10 and recall@100 per backend: exact cosine in numpy, metrics from
    :func:`evaluations.metrics.evaluate_run` (ranx, same conventions as ``rag eval``)."""
    doc_ids = np.array(workload.eval_doc_ids)
    k = min(top_k, len(doc_ids))
    scores: dict[str, dict[str, float]] = {}
    for backend in config.backends:
        docs = np.load(warm.vectors[backend]["eval_docs"])
        queries = np.load(warm.vectors[backend]["eval_queries"])
        similarity = queries @ docs.T  # unit vectors: dot product = cosine
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        run: dict[str, dict[str, float]] = {}
        for row, query_id in enumerate(workload.eval_query_ids):
            run[query_id] = {str(doc_ids[j]): float(similarity[row, j]) for j in top[row]}
        recall = f"recall@{top_k}"  # with fewer docs than top_k every doc is ranked
        metrics = evaluate_run(workload.qrels, run, ["ndcg@10", recall]).metrics
        scores[backend] = {"ndcg@10": round(float(metrics["ndcg@10"]), 5),
                           recall: round(float(metrics[recall]), 5)}
    return scores


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _goals(results: dict[str, Any], speedups: list[dict[str, Any]],
           default_batch_size: int, quick: bool) -> dict[str, Any]:
    every_round_min = {row["backend"]: row["speedup"]["min"] for row in speedups
                       if row["kind"] == "all" and row["batch_size"] == default_batch_size}
    goals: dict[str, Any] = {}
    held: list[str] = []
    missed: list[str] = []
    for key, description, metric, op, target in GOALS:
        value = results[metric]
        holds = bool(value >= target if op == ">=" else value <= target)
        goal: dict[str, Any] = {"description": description, "metric": metric,
                                "target": f"{op} {target}", "measured": value, "holds": holds}
        if metric in ("fastembed_speedup", "int8_speedup"):
            worst = every_round_min[FP32 if metric == "fastembed_speedup" else INT8]
            goal["holds_in_every_round"] = bool(worst >= target)
            goal["worst_round"] = worst
        if metric == "int8_ndcg_loss" and quick:
            goal["note"] = "quick mode: nDCG on a query subset with few distractors"
        goals[key] = goal
        (held if holds else missed).append(key)
    int8_both = goals["int8_speedup_2.5x"]["holds"] and goals["int8_ndcg_loss_0.005"]["holds"]
    goals["int8_goal"] = {"description": "int8 >= 2.5x AND nDCG@10 loss <= 0.005",
                          "holds": int8_both}
    goals["held"] = held
    goals["missed"] = missed
    goals["summary"] = "; ".join(
        [f"HOLDS {k} ({_fmt(goals[k]['measured'])})" for k in held]
        + [f"MISSED {k} ({_fmt(goals[k]['measured'])})" for k in missed])
    return goals


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summarize(config: EmbeddingBenchmarkConfig, workload: Workload,
              loads: list[LoadSample], warm: WarmResult,
              elapsed_s: float | None = None) -> dict[str, Any]:
    """Everything ``results.json`` and ``--json`` carry, including the ``goals``."""
    throughput = throughput_table(config, warm.samples)
    speedups = speedup_table(config, warm.samples)
    cosines = agreement(config, workload, warm)
    quality = retrieval(config, workload, warm)
    all_loads = loads + warm.load_samples

    def headline(backend: str) -> float:
        for row in speedups:
            if (row["backend"], row["batch_size"], row["kind"]) == \
                    (backend, config.default_batch_size, "all"):
                return float(row["speedup"]["median"])
        raise EmbeddingBenchmarkError(f"no speed-up measured for {backend}")

    mib = 2 ** 20
    # peak RSS of a fresh process embedding two batches of the longest chunks, per batch size
    peak_by_batch = {b: {bs: round(_median([s.peak_rss_bytes / mib for s in loads
                                            if s.backend == b and s.batch_size == bs
                                            and s.peak_rss_bytes is not None]), 1)
                         for bs in config.batch_sizes} for b in config.backends}
    peak_mb = {b: peak_by_batch[b][config.default_batch_size] for b in config.backends}
    load_rss_mb = {b: round(_median([s.load_rss_bytes / mib for s in all_loads
                                     if s.backend == b]), 1) for b in config.backends}
    load_detail: dict[str, dict[str, Any]] = {}
    for backend in config.backends:
        mine = [s for s in all_loads if s.backend == backend]
        load_detail[backend] = {
            "startup_s": _spread([s.startup_s for s in mine]),
            "import_s": round(_median([s.import_s for s in mine]), 3),
            "model_load_s": round(_median([s.load_s for s in mine]), 3),
            "first_embed_s": round(_median([s.first_embed_s for s in mine]), 3),
            "samples": len(mine)}
    ndcg = {b: quality[b]["ndcg@10"] for b in config.backends}
    recall_key = next(k for k in quality[REFERENCE] if k.startswith("recall@"))
    load_average = warm.load_average
    one_minute = [la["1m"] for la in load_average]
    results: dict[str, Any] = {
        "mode": "quick" if config.quick else "full",
        "default_batch_size": config.default_batch_size,
        "batch_sizes": config.batch_sizes,
        "backends": list(config.backends),
        "reference_backend": REFERENCE,
        "fastembed_speedup": headline(FP32),
        "int8_speedup": headline(INT8),
        "fastembed_rss_ratio": round(peak_mb[FP32] / peak_mb[REFERENCE], 3),
        "int8_rss_ratio": round(peak_mb[INT8] / peak_mb[REFERENCE], 3),
        "min_cosine": round(cosines[FP32]["all"]["min"], 6),
        "mean_cosine": round(cosines[FP32]["all"]["mean"], 6),
        "int8_min_cosine": round(cosines[INT8]["all"]["min"], 6),
        "int8_mean_cosine": round(cosines[INT8]["all"]["mean"], 6),
        "ndcg@10": ndcg,
        recall_key: {b: quality[b][recall_key] for b in config.backends},
        "int8_ndcg_loss": round(ndcg[REFERENCE] - ndcg[INT8], 5),
        "fastembed_ndcg_loss": round(ndcg[REFERENCE] - ndcg[FP32], 5),
        "load_s": {b: load_detail[b]["startup_s"]["median"] for b in config.backends},
        "load": load_detail,
        "load_rss_mb": load_rss_mb,
        "peak_rss_mb": peak_mb,
        "peak_rss_mb_by_batch": peak_by_batch,
        "rss_ratio_by_batch": {b: {bs: round(peak_by_batch[b][bs]
                                             / peak_by_batch[REFERENCE][bs], 3)
                                   for bs in config.batch_sizes}
                               for b in config.backends if b != REFERENCE},
        "peak_rss_mb_throughput_worker": {b: round(v / mib, 1)
                                          for b, v in warm.peak_rss_bytes.items()},
        "peak_rss_mb_after_retrieval": {b: round(v / mib, 1)
                                        for b, v in warm.final_peak_rss_bytes.items()},
        "throughput": throughput,
        "speedups": speedups,
        "agreement": cosines,
        "retrieval": {"scores": quality, **workload.description["eval"],
                      "corpus_docs_per_s": {
                          b: round(len(workload.eval_docs.texts) / s, 2)
                          for b, s in warm.corpus_embed_s.items()},
                      "note": ("whole SciFact test split" if config.full_retrieval else
                               "quick subset: judged docs of the sampled queries plus "
                               "distractors; not comparable to the full-corpus nDCG")},
        "workload": {k: v for k, v in workload.description.items() if k != "eval"},
        "model_versions": warm.model_versions,
        "load_average": {"samples": load_average, "max_1m": max(one_minute),
                         "min_1m": min(one_minute), "cpus": os.cpu_count()},
        "config": config.describe(),
    }
    if elapsed_s is not None:
        results["elapsed_s"] = round(elapsed_s, 1)
    results["goals"] = _goals(results, speedups, config.default_batch_size, config.quick)
    return results


# --- report ----------------------------------------------------------------------------------
def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _range(spread: dict[str, float], digits: int = 1) -> str:
    return (f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}-"
            f"{spread['max']:.{digits}f})")


def plot_throughput(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in results["backends"]:
        rows = [r for r in results["throughput"]
                if r["backend"] == backend and r["kind"] == "all"]
        sizes = [r["batch_size"] for r in rows]
        for ax, metric in zip(axes, ("texts_per_s", "tokens_per_s"), strict=True):
            med = np.array([r[metric]["median"] for r in rows])
            low = med - np.array([r[metric]["min"] for r in rows])
            high = np.array([r[metric]["max"] for r in rows]) - med
            ax.errorbar(sizes, med, yerr=[low, high], marker="o", capsize=4, label=backend)
    for ax, label in zip(axes, ("texts/s", "tokens/s"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(results["batch_sizes"], [str(b) for b in results["batch_sizes"]])
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"{label} (median, bars min-max)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"all-MiniLM-L6-v2 throughput, {results['mode']} mode "
                 f"({results['config']['rounds']} interleaved rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], command: str | None = None,
                 root: Path | None = None) -> Path:
    """``reports/embeddings/<timestamp>/`` with report.md, results.json and the plot."""
    report = Report(benchmark="embeddings",
                    title="Embedding backends: FastEmbed fp32 / int8 vs sentence-transformers")
    if command is not None:
        report.command = command
    folder = report.folder(root)
    plot_throughput(results, folder / "throughput.png")
    quick = results["mode"] == "quick"
    goals = results["goals"]
    report.add(f"Mode: **{results['mode']}**. Default batch size "
               f"{results['default_batch_size']}; {results['config']['rounds']} interleaved "
               f"round(s); {results['config']['probe_rounds']} round(s) of fresh processes (one "
               f"per backend and batch size) for cold load and peak RSS. Load average "
               f"(1 min) during the run: "
               f"{results['load_average']['min_1m']}-{results['load_average']['max_1m']} on "
               f"{results['load_average']['cpus']} CPUs." +
               (" **Quick mode: nDCG is on a subset (see Retrieval) and not comparable to the "
                "full-corpus score.**" if quick else ""))

    report.add("## Goals")
    report.table(["goal", "target", "measured", "holds", "every round"],
                 [[goals[k]["description"], goals[k]["target"], goals[k]["measured"],
                   "**yes**" if goals[k]["holds"] else "no",
                   {True: "yes", False: "no"}.get(goals[k].get("holds_in_every_round"), "")]
                  for k, *_ in GOALS])
    report.add(f"Summary: {goals['summary']}.")

    report.add("## Throughput (chunks + queries), median (min-max) over rounds")
    rows = []
    for row in results["throughput"]:
        if row["kind"] != "all":
            continue
        rows.append([row["backend"], row["batch_size"], _range(row["texts_per_s"]),
                     _range(row["tokens_per_s"], 0), row["rounds"], row["cpu_per_wall"]])
    report.table(["backend", "batch", "texts/s", "tokens/s", "rounds", "CPU s / wall s"], rows)
    report.add("CPU s / wall s is the worker's CPU time over wall time during the embedding "
               "call: about the thread count (2) when it had the cores to itself, lower when "
               "other processes took them.")
    report.add("![throughput vs batch size](throughput.png)")

    report.add("### By text kind (chunks = passages, claims = queries)")
    report.table(["backend", "batch", "kind", "texts", "tokens", "texts/s", "tokens/s",
                  "IQR texts/s"],
                 [[r["backend"], r["batch_size"], r["kind"], r["texts"], r["tokens"],
                   _range(r["texts_per_s"]), _range(r["tokens_per_s"], 0),
                   f"{r['texts_per_s']['q1']:.1f}-{r['texts_per_s']['q3']:.1f}"]
                  for r in results["throughput"] if r["kind"] != "all"])

    report.add("## Speed-up over sentence-transformers (median of per-round ratios, min-max)")
    report.table(["backend", "batch", "all", "chunks", "queries"],
                 [[b, bs] + [_range(next(r["speedup"] for r in results["speedups"]
                                         if (r["backend"], r["batch_size"], r["kind"])
                                         == (b, bs, kind)), 2)
                             for kind in ("all", *KINDS)]
                  for b in results["backends"] if b != REFERENCE
                  for bs in results["batch_sizes"]])

    report.add("## Cold load and memory (each backend in its own process)")
    report.table(["backend", "start → first embedding s", "samples", "import s",
                  "model load s", "first embed s", "RSS after first embedding MiB"],
                 [[b, _range(results["load"][b]["startup_s"], 2),
                   results["load"][b]["samples"], results["load"][b]["import_s"],
                   results["load"][b]["model_load_s"], results["load"][b]["first_embed_s"],
                   results["load_rss_mb"][b]]
                  for b in results["backends"]])
    sizes = results["batch_sizes"]
    report.add("Peak RSS (MiB, `ru_maxrss`) of a fresh process per backend and batch size "
               "that embedded two batches of the longest chunks (every batch at the 256-token "
               "window), and the ratio to sentence-transformers; last columns: the long-lived "
               "throughput worker after all rounds, and after the retrieval corpus:")
    report.table(["backend", *[f"batch {bs}" for bs in sizes], *[f"÷ ST @{bs}" for bs in sizes],
                  "throughput worker", "after retrieval"],
                 [[b, *[results["peak_rss_mb_by_batch"][b][bs] for bs in sizes],
                   *[round(results["peak_rss_mb_by_batch"][b][bs]
                           / results["peak_rss_mb_by_batch"][REFERENCE][bs], 3) for bs in sizes],
                   results["peak_rss_mb_throughput_worker"][b],
                   results["peak_rss_mb_after_retrieval"][b]]
                  for b in results["backends"]])

    report.add("## Agreement with sentence-transformers (cosine)")
    sets = ["passages", "queries", "long_texts", "eval_docs", "eval_queries", "all"]
    report.table(["backend", "text set", "n", "min", "mean"],
                 [[b, name, results["agreement"][b][name]["n"],
                   f"{results['agreement'][b][name]['min']:.6f}",
                   f"{results['agreement'][b][name]['mean']:.6f}"]
                  for b in results["agreement"] for name in sets
                  if name in results["agreement"][b]])

    retrieval_info = results["retrieval"]
    recall_key = next(k for k in results if k.startswith("recall@"))
    report.add(f"## Retrieval: SciFact nDCG@10, exact cosine in numpy\n\n"
               f"{retrieval_info['queries']} queries, {retrieval_info['docs']} documents "
               f"({retrieval_info['docs_over_window']} at or over the 256-token window), "
               f"{retrieval_info['judgements']} judgements — {retrieval_info['note']}. "
               "Documents are `title + \" \" + text`, truncated at 256 tokens by each backend; "
               "metrics by ranx (`ndcg@10`: linear gain, as pytrec_eval/MTEB).")
    report.table(["backend", "nDCG@10", recall_key, "loss vs ST", "corpus docs/s"],
                 [[b, f"{results['ndcg@10'][b]:.5f}", f"{results[recall_key][b]:.4f}",
                   f"{results['ndcg@10'][REFERENCE] - results['ndcg@10'][b]:+.5f}",
                   retrieval_info["corpus_docs_per_s"].get(b, "")]
                  for b in results["backends"]])

    workload = results["workload"]
    report.add(
        "## Method\n\n"
        f"- Throughput set: {workload['passages']['texts']} chunks "
        f"({workload['passages']['tokens']} tokens, mean "
        f"{workload['passages']['tokens_mean']}) cut by `chunk_document` from "
        f"{workload['passages']['from_documents']} shuffled SciFact abstracts, plus "
        f"{workload['queries']['texts']} SciFact claims as queries "
        f"({workload['queries']['tokens']} tokens). Chunks go through `embed_passages`, "
        "claims through `embed_queries`; `all` is both together.\n"
        "- Tokens are model input tokens: wordpieces + [CLS]/[SEP], truncated at 256, "
        "padding not counted.\n"
        "- Each backend lives in its own worker process; the parent only sends requests and "
        "the worker times the `embed_*` call itself. Rounds are interleaved: every round "
        "measures every batch size on every backend, the backend order rotating, with a "
        f"{results['config']['settle_s']} s pause between measurements. Speed-ups are the "
        "median over rounds of the ratio to sentence-transformers in the same round.\n"
        "- **fastembed-int8 always embeds one text per ONNX run** (the backend forces "
        "batch_size=1 so an int8 vector does not depend on its batch neighbours), so its "
        "rows differ only by noise.\n"
        "- Cold load = wall time from `Popen` to the worker's first embedding (interpreter "
        "start, imports, model load, one short text), over every fresh process (memory "
        "probes and throughput workers); RSS = `ru_maxrss` of that process. The headline "
        "RSS ratio is at the default batch size.\n"
        f"- Long texts for agreement: {workload['long_texts']['texts']} whole abstracts over "
        "the window (truncated by every backend).\n"
        "- Numbers on a shared 2-core machine are noisy (±2x run to run in earlier "
        "measurements): read the spread, not just the median.")
    report.results = results
    report.write(root)
    return folder


# --- the whole run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkOutcome:
    results: dict[str, Any]
    folder: Path


def run_embedding_benchmark(config: EmbeddingBenchmarkConfig, state_dir: Path,
                            progress: ProgressCallback | None = None,
                            command: str | None = None,
                            reports_root: Path | None = None) -> BenchmarkOutcome:
    """The whole benchmark (the CLI calls this; the flow runs the same steps as tasks)."""
    started = time.perf_counter()
    steps = Progress(planned_steps(config), progress)
    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-embeddings-"))
    try:
        workload = prepare_workload(config, state_dir, workdir)
        loads = measure_cold_loads(config, workload, state_dir, steps)
        warm = measure_warm(config, workload, state_dir, steps)
        results = summarize(config, workload, loads, warm, time.perf_counter() - started)
        steps.step("scored agreement and retrieval")
        folder = write_report(results, command, reports_root)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return BenchmarkOutcome(results, folder)


def as_dict(outcome: BenchmarkOutcome) -> dict[str, Any]:
    return {"ok": True, "report": _relative(outcome.folder), **outcome.results}

