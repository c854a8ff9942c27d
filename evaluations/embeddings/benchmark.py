"""``rag bench embeddings``: FastEmbed fp32, FastEmbed int8 and sentence-transformers on the
same all-MiniLM-L6-v2 weights, measured in one run on this machine.

What is measured, and how:

* **Throughput** (texts/s and tokens/s) at several batch sizes, on real text: SciFact
  abstracts chunked exactly as ingestion chunks them (``chunk_document``) plus short SciFact
  claims as query texts. Every backend runs in its own long-lived worker process
  (:mod:`evaluations.embeddings.worker`); the rounds are interleaved (each round measures
  every batch size on every backend, the backend order rotating from round to round) so that
  a noisy neighbour or thermal drift hits all backends alike. Reported: median over rounds
  and the spread (min/max and quartiles). Speed-ups are the median of the per-round ratios
  against sentence-transformers, so drift between rounds cancels out.
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

The steps (:func:`prepare_workload`, :func:`measure_cold_loads`, :func:`measure_warm`,
:func:`summarize`, :func:`write_report`) are what the Prefect flow ``benchmark-embeddings``
runs as tasks; :func:`run_embedding_benchmark` runs them in one process for the CLI. The
results go to ``reports/embeddings/<timestamp>/`` (``report.md``, ``results.json``,
``throughput.png``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.common.paths import relative
from evaluations.embeddings.config import EmbeddingBenchmarkConfig
from evaluations.embeddings.measure import measure_cold_loads, measure_warm
from evaluations.embeddings.progress import Progress, ProgressCallback, planned_steps
from evaluations.embeddings.report import write_report
from evaluations.embeddings.results import EmbeddingResults
from evaluations.embeddings.summary import summarize
from evaluations.embeddings.workload import prepare_workload

__all__ = ["BenchmarkOutcome", "run_embedding_benchmark"]


@dataclass(frozen=True)
class BenchmarkOutcome:
    results: EmbeddingResults
    folder: Path

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object (and the flow's return value)."""
        return {"ok": True, "report": relative(self.folder), **self.results.as_dict()}


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
