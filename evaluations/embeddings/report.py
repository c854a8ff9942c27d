"""``reports/embeddings/<timestamp>/``: ``report.md``, ``results.json`` and
``throughput.png`` of one ``rag bench embeddings`` run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluations.common.reports import Report
from evaluations.common.stats import Spread
from evaluations.embeddings.config import GOALS, KINDS, REFERENCE
from evaluations.embeddings.results import EmbeddingResults

__all__ = ["plot_throughput", "write_report"]


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _range(spread: Spread, digits: int = 1) -> str:
    return f"{spread.median:.{digits}f} ({spread.min:.{digits}f}-{spread.max:.{digits}f})"


def plot_throughput(results: EmbeddingResults, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in results.backends:
        rows = [r for r in results.throughput if r.backend == backend and r.kind == "all"]
        sizes = [r.batch_size for r in rows]
        for ax, spreads in zip(axes, ([r.texts_per_s for r in rows],
                                      [r.tokens_per_s for r in rows]), strict=True):
            med = np.array([s.median for s in spreads])
            low = med - np.array([s.min for s in spreads])
            high = np.array([s.max for s in spreads]) - med
            ax.errorbar(sizes, med, yerr=[low, high], marker="o", capsize=4, label=backend)
    for ax, label in zip(axes, ("texts/s", "tokens/s"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(results.batch_sizes, [str(b) for b in results.batch_sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"{label} (median, bars min-max)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"all-MiniLM-L6-v2 throughput, {results.mode} mode "
                 f"({results.config['rounds']} interleaved rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: EmbeddingResults, command: str | None = None,
                 root: Path | None = None) -> Path:
    """``<root>/embeddings/<timestamp>/`` with report.md, results.json and the plot
    (``root`` defaults to :func:`evaluations.common.reports.reports_root`)."""
    report = Report(benchmark="embeddings",
                    title="Embedding backends: FastEmbed fp32 / int8 vs sentence-transformers")
    if command is not None:
        report.command = command
    folder = report.folder(root)
    plot_throughput(results, folder / "throughput.png")
    config = results.config
    load = results.load_average_summary()
    goals = results.goals
    report.add(f"Mode: **{results.mode}**. Default batch size "
               f"{results.default_batch_size}; {config['rounds']} interleaved "
               f"round(s); {config['probe_rounds']} round(s) of fresh processes (one "
               f"per backend and batch size) for cold load and peak RSS. Load average "
               f"(1 min) during the run: {load['min_1m']}-{load['max_1m']} on "
               f"{load['cpus']} CPUs." +
               (" **Quick mode: nDCG is on a subset (see Retrieval) and not comparable to the "
                "full-corpus score.**" if results.quick else ""))

    report.add("## Goals")
    report.table(["goal", "target", "measured", "holds", "every round"],
                 [[goal.description, goal.target, goal.measured,
                   "**yes**" if goal.holds else "no",
                   _yes_no(goal.holds_in_every_round)]
                  for key, *_ in GOALS for goal in [goals.goals[key]]])
    report.add(f"Summary: {goals.summary}.")

    report.add("## Throughput (chunks + queries), median (min-max) over rounds")
    report.table(["backend", "batch", "texts/s", "tokens/s", "rounds", "CPU s / wall s"],
                 [[r.backend, r.batch_size, _range(r.texts_per_s), _range(r.tokens_per_s, 0),
                   r.rounds, r.cpu_per_wall] for r in results.throughput if r.kind == "all"])
    report.add("CPU s / wall s is the worker's CPU time over wall time during the embedding "
               "call: about the thread count (2) when it had the cores to itself, lower when "
               "other processes took them.")
    report.add("![throughput vs batch size](throughput.png)")

    report.add("### By text kind (chunks = passages, claims = queries)")
    report.table(["backend", "batch", "kind", "texts", "tokens", "texts/s", "tokens/s",
                  "IQR texts/s"],
                 [[r.backend, r.batch_size, r.kind, r.texts, r.tokens,
                   _range(r.texts_per_s), _range(r.tokens_per_s, 0),
                   f"{r.texts_per_s.q1:.1f}-{r.texts_per_s.q3:.1f}"]
                  for r in results.throughput if r.kind != "all"])

    report.add("## Speed-up over sentence-transformers (median of per-round ratios, min-max)")
    report.table(["backend", "batch", "all", "chunks", "queries"],
                 [[b, bs] + [_range(results.speedup_row(b, bs, kind).speedup, 2)
                             for kind in ("all", *KINDS)]
                  for b in results.backends if b != REFERENCE
                  for bs in results.batch_sizes])

    report.add("## Cold load and memory (each backend in its own process)")
    report.table(["backend", "start → first embedding s", "samples", "import s",
                  "model load s", "first embed s", "RSS after first embedding MiB"],
                 [[b, _range(d.startup_s, 2), d.samples, d.import_s, d.model_load_s,
                   d.first_embed_s, results.load_rss_mb[b]]
                  for b in results.backends for d in [results.load[b]]])
    sizes = results.batch_sizes
    by_batch = results.peak_rss_mb_by_batch
    report.add("Peak RSS (MiB, `ru_maxrss`) of a fresh process per backend and batch size "
               "that embedded two batches of the longest chunks (every batch at the 256-token "
               "window), and the ratio to sentence-transformers; last columns: the long-lived "
               "throughput worker after all rounds, and after the retrieval corpus:")
    report.table(["backend", *[f"batch {bs}" for bs in sizes], *[f"÷ ST @{bs}" for bs in sizes],
                  "throughput worker", "after retrieval"],
                 [[b, *[by_batch[b][bs] for bs in sizes],
                   *[round(by_batch[b][bs] / by_batch[REFERENCE][bs], 3) for bs in sizes],
                   results.peak_rss_mb_throughput_worker[b],
                   results.peak_rss_mb_after_retrieval[b]]
                  for b in results.backends])

    report.add("## Agreement with sentence-transformers (cosine)")
    sets = ["passages", "queries", "long_texts", "eval_docs", "eval_queries", "all"]
    report.table(["backend", "text set", "n", "min", "mean"],
                 [[b, name, per_set[name].n, f"{per_set[name].min:.6f}",
                   f"{per_set[name].mean:.6f}"]
                  for b, per_set in results.agreement.items() for name in sets
                  if name in per_set])

    quality = results.retrieval
    eval_set = quality.eval_set
    ndcg = results.ndcg_at_10
    report.add(f"## Retrieval: SciFact nDCG@10, exact cosine in numpy\n\n"
               f"{eval_set.queries} queries, {eval_set.docs} documents "
               f"({eval_set.docs_over_window} at or over the 256-token window), "
               f"{eval_set.judgements} judgements — {quality.note}. "
               "Documents are `title + \" \" + text`, truncated at 256 tokens by each backend; "
               "metrics by ranx (`ndcg@10`: linear gain, as pytrec_eval/MTEB).")
    report.table(["backend", "nDCG@10", results.recall_key, "loss vs ST", "corpus docs/s"],
                 [[b, f"{ndcg[b]:.5f}", f"{results.recall[b]:.4f}",
                   f"{ndcg[REFERENCE] - ndcg[b]:+.5f}", quality.corpus_docs_per_s.get(b, "")]
                  for b in results.backends])
    report.add(_method(results))
    report.results = results.as_dict()
    report.write(root)
    return folder


def _method(results: EmbeddingResults) -> str:
    workload = results.workload
    return (
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
        f"{results.config['settle_s']} s pause between measurements. Speed-ups are the "
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
