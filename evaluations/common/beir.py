"""The one reader of BEIR files: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``,
``qrels/<split>.tsv``. Every evaluation and benchmark reads its data through it.

The layout of the BEIR benchmark (Thakur et al., 2021) as MTEB uses it: the corpus holds one
``{"_id", "title", "text"}`` object per line; queries one ``{"_id", "text"}``; each split's
qrels file is tab-separated ``query-id  corpus-id  score`` with a header line. Most datasets
evaluate on ``test``; NFCorpus here ships ``train`` and ``dev`` only.

:func:`load_beir` loads only the queries judged in the chosen split (``queries.jsonl`` may
hold the queries of every split); :func:`load_queries` without ``wanted`` reads them all, in
file order. Qrels rows repeated for one (query, document) pair keep the last score, as
BEIR's loader does. Line ends may be LF or CRLF; blank lines are skipped. Whatever is wrong
with a file is a :class:`~rag_core.errors.DatasetError` naming the file and the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rag_core.errors import DatasetError

Document = dict[str, Any]
"""One corpus line: ``{"_id", "title", "text", ...}``."""


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
        raise DatasetError(root, "no corpus.jsonl or corpus.jsonl.gz")
    return found


def queries_path(root: Path) -> Path:
    found = _first_existing(root, ("queries.jsonl", "queries.jsonl.gz"))
    if found is None:
        raise DatasetError(root, "no queries.jsonl")
    return found


def available_splits(root: Path) -> list[str]:
    folder = root / "qrels"
    return sorted(p.name[:-4] for p in folder.glob("*.tsv")) if folder.is_dir() else []


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a .jsonl or .jsonl.gz file (blank lines skipped)."""
    if not path.is_file():
        raise DatasetError(path, "no such file")
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, f"line {line_no}: malformed JSON ({exc.msg})") \
                    from exc
            if not isinstance(obj, dict):
                raise DatasetError(path, f"line {line_no}: not a JSON object")
            yield obj


def read_documents(path: Path, limit: int | None = None) -> list[Document]:
    """The first ``limit`` (default: all) documents of a corpus file, in file order."""
    return list(itertools.islice(iter_jsonl(path), limit))


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``records`` one JSON object per line (a corpus a benchmark ingests)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


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
                raise DatasetError(path, f"line {line_no}: expected 3 tab-separated "
                                         f"columns, got {len(cells)}")
            try:
                grade = int(cells[2])
            except ValueError:
                if line_no == 1:
                    continue  # the header
                raise DatasetError(path, f"line {line_no}: score {cells[2]!r} is not an "
                                         "integer") from None
            qrels.setdefault(cells[0], {})[cells[1]] = grade
    return qrels


def load_queries(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    """Query id → text, in file order; only the ``wanted`` ids when given."""
    queries: dict[str, str] = {}
    for obj in iter_jsonl(path):
        query_id = str(obj.get("_id", ""))
        if wanted is not None and query_id not in wanted:
            continue
        text = obj.get("text")
        if not query_id or not isinstance(text, str):
            raise DatasetError(path, f"query {query_id!r} has no '_id' or 'text'")
        queries[query_id] = text
    return queries


def load_beir(root: Path, split: str = "test") -> BeirDataset:
    """Load the dataset folder ``root`` for ``split`` (``qrels/<split>.tsv``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "no such folder")
    corpus = corpus_path(root)
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        splits = available_splits(root)
        raise DatasetError(root, f"no qrels for split {split!r} (available: "
                                 f"{', '.join(splits) or 'none'})")
    queries_file = queries_path(root)
    qrels = load_qrels(qrels_file)
    if not qrels:
        raise DatasetError(qrels_file, "no judgements")
    texts = load_queries(queries_file, set(qrels))
    missing = [q for q in qrels if q not in texts]
    if missing:
        raise DatasetError(root, f"{len(missing)} judged queries are not in "
                                 f"{queries_file.name}, e.g. {missing[:3]}")
    return BeirDataset(root, split, corpus, {q: texts[q] for q in qrels}, qrels)
