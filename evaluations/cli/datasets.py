"""The data sets ``--dataset`` may name instead of a folder: the copies shipped in ``data/``
(found by ``rag_core.config.resource_dir`` in a checkout and in an installed wheel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rag_core.config import nfcorpus_dir, scifact_dir

__all__ = ["DATASET_HELP", "SHIPPED_DATASETS", "dataset_dir"]

SHIPPED_DATASETS: dict[str, Callable[[], Path]] = {"scifact": scifact_dir,
                                                   "nfcorpus": nfcorpus_dir}
DATASET_HELP = ("BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv), or "
                "'scifact' (test split) / 'nfcorpus' (train and dev splits): the shipped copies")


def dataset_dir(value: Path) -> Path:
    """``value``, or the shipped data set it names when no such folder exists (a folder of
    that name in the working directory wins, so every path keeps working)."""
    shipped = SHIPPED_DATASETS.get(str(value))
    return shipped() if shipped is not None and not value.exists() else value
