"""BEIR dataset folders: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv``.

The layout of the BEIR benchmark (Thakur et al., 2021) as MTEB uses it: the corpus holds one
``{"_id", "title", "text"}`` object per line; queries one ``{"_id", "text"}``; each split's
qrels file is tab-separated ``query-id  corpus-id  score`` with a header line. Most datasets
evaluate on ``test``; NFCorpus here ships ``train`` and ``dev`` only.

Only the queries judged in the chosen split are loaded (``queries.jsonl`` may hold the
queries of every split). Qrels rows repeated for one (query, document) pair keep the last
score, as BEIR's loader does. Line ends may be LF or CRLF.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rag_core.errors import RagCoreError


class BeirDatasetError(RagCoreError):
    """The folder is not a usable BEIR dataset (missing file, split or query)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"BEIR dataset {str(path)!r}: {reason}")


@dataclass(frozen=True)
class BeirDataset:
    root: Path
    split: str
    corpus_path: Path
    queries: dict[str, str]  # query id -> text, the split's judged queries in qrels order
    qrels: dict[str, dict[str, int]]  # query id -> {document id: grade}

    @property
    def name(self) -> str:
        return self.root.name

    def limited(self, limit_queries: int | None) -> BeirDataset:
        """The same dataset with only its first ``limit_queries`` queries (qrels order)."""
        if limit_queries is None or limit_queries >= len(self.queries):
            return self
        keep = list(self.queries)[:limit_queries]
        return BeirDataset(self.root, self.split, self.corpus_path,
                           {q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep})


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def corpus_path(root: Path) -> Path:
    found = _first_existing(root, ("corpus.jsonl", "corpus.jsonl.gz"))
    if found is None:
        raise BeirDatasetError(root, "no corpus.jsonl or corpus.jsonl.gz")
    return found


def available_splits(root: Path) -> list[str]:
    folder = root / "qrels"
    return sorted(p.name[:-4] for p in folder.glob("*.tsv")) if folder.is_dir() else []


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a .jsonl or .jsonl.gz file (blank lines skipped)."""
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BeirDatasetError(path, f"line {line_no}: malformed JSON ({exc.msg})") \
                    from exc
            if not isinstance(obj, dict):
                raise BeirDatasetError(path, f"line {line_no}: not a JSON object")
            yield obj


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query-id  corpus-id  score`` rows (header line optional) → {query: {doc: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t",
                                                 quoting=csv.QUOTE_NONE), start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) < 3:
                raise BeirDatasetError(path, f"line {line_no}: expected 3 tab-separated "
                                             f"columns, got {len(cells)}")
            try:
                grade = int(cells[2])
            except ValueError:
                if line_no == 1:
                    continue  # the header
                raise BeirDatasetError(path, f"line {line_no}: score {cells[2]!r} is not an "
                                             "integer") from None
            qrels.setdefault(cells[0], {})[cells[1]] = grade
    return qrels


def load_queries(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    queries: dict[str, str] = {}
    for obj in iter_jsonl(path):
        query_id = str(obj.get("_id", ""))
        if wanted is not None and query_id not in wanted:
            continue
        text = obj.get("text")
        if not query_id or not isinstance(text, str):
            raise BeirDatasetError(path, f"query {query_id!r} has no '_id' or 'text'")
        queries[query_id] = text
    return queries


def load_beir(root: Path, split: str = "test") -> BeirDataset:
    """Load the dataset folder ``root`` for ``split`` (``qrels/<split>.tsv``)."""
    root = Path(root)
    if not root.is_dir():
        raise BeirDatasetError(root, "no such folder")
    corpus = corpus_path(root)
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        splits = available_splits(root)
        raise BeirDatasetError(root, f"no qrels for split {split!r} (available: "
                                     f"{', '.join(splits) or 'none'})")
    queries_file = _first_existing(root, ("queries.jsonl", "queries.jsonl.gz"))
    if queries_file is None:
        raise BeirDatasetError(root, "no queries.jsonl")
    qrels = load_qrels(qrels_file)
    if not qrels:
        raise BeirDatasetError(qrels_file, "no judgements")
    texts = load_queries(queries_file, set(qrels))
    missing = [q for q in qrels if q not in texts]
    if missing:
        raise BeirDatasetError(root, f"{len(missing)} judged queries are not in "
                                     f"{queries_file.name}, e.g. {missing[:3]}")
    return BeirDataset(root, split, corpus, {q: texts[q] for q in qrels}, qrels)
