"""Readers for ingestion sources.

Two shapes are supported: a folder of ``.txt``/``.md``/``.html`` files (one document per
file), and BEIR-style JSONL (``{"_id", "title", "text"}`` per line, plain or gzip). Readers
never raise on a bad record: they yield it with ``problem`` set (malformed JSON, invalid
UTF-8, missing fields), so that validation can reject it with its line number and the rest
of the source proceeds.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO, cast

from rag_core.errors import SourceError, unstorable_text

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}


@dataclass(frozen=True)
class SourceLimits:
    """What one source file may cost to read. Over a limit, the file (or the rest of it)
    becomes one rejected record naming the limit, and the other files go on."""

    max_file_bytes: int = 256 * 1024 * 1024
    max_decompressed_bytes: int = 2 * 1024 * 1024 * 1024
    # A .gz that inflates more than this many times (past its first MiB) is a bomb, not text.
    max_compression_ratio: float = 200.0
    max_json_depth: int = 32


@dataclass(frozen=True)
class SourceRecord:
    """One document as read, or a record that could not be read (``problem`` set)."""

    source: str  # the file it came from, relative to the source root
    line_no: int | None  # 1-based line for JSONL
    record_id: str | None
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def source_uri(self) -> str:
        """Stable identity of the document within its tenant (re-ingestion key)."""
        if self.record_id is not None and self.line_no is not None:
            return f"{self.source}#{self.record_id}"
        return self.source


def fingerprint(path: Path) -> str:
    """sha256 over the source's file names and bytes: the same source → the same job."""
    digest = hashlib.sha256()
    for file in _files(path):
        digest.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_source(path: Path, limits: SourceLimits | None = None) -> Iterator[SourceRecord]:
    """Every record of ``path`` (a folder, a .jsonl or a .jsonl.gz file), in a stable order."""
    limits = limits or SourceLimits()
    if not path.exists():
        raise SourceError(str(path), "no such file or folder")
    root = path if path.is_dir() else path.parent
    for file in _files(path):
        relative = str(file.relative_to(root))
        size = file.stat().st_size
        if size > limits.max_file_bytes:
            yield SourceRecord(relative, None, None, "", "", problem=(
                f"file of {size} bytes, over the limit of {limits.max_file_bytes} "
                "(RAG_INGEST_MAX_FILE_BYTES)"))
        elif file.name.lower().endswith((".jsonl", ".jsonl.gz")):
            yield from _read_jsonl(file, relative, size, limits)
        else:
            yield _read_document(file, relative)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        if not _supported(path):
            raise SourceError(str(path), "expected a folder, .jsonl or .jsonl.gz")
        return [path]
    files = sorted(p for p in _walk_confined(path) if _supported(p))
    if not files:
        raise SourceError(str(path), "no .txt, .md, .html or .jsonl files in it")
    return files


def _walk_confined(root: Path) -> Iterator[Path]:
    """The regular files under ``root``, never through a symbolic link that leaves it.

    A link inside a source folder could pull another tenant's files (or the platform's own
    credentials) into the caller's tenant: one that points outside ``root`` refuses the whole
    source, naming the link; one that stays inside is skipped (its target is read under its
    own name). Folders are walked without following links.
    """
    real_root = root.resolve()
    for folder, subfolders, names in os.walk(root, followlinks=False):
        for name in [*names, *subfolders]:
            entry = Path(folder) / name
            if entry.is_symlink():
                target = entry.resolve()
                if not target.is_relative_to(real_root):
                    raise SourceError(str(entry), f"is a symbolic link to {target}, outside "
                                                  f"the source folder {root}")
                continue
            if name in names and entry.is_file():
                yield entry


def _supported(path: Path) -> bool:
    name = path.name.lower()
    return (name.endswith((".jsonl", ".jsonl.gz"))
            or path.suffix.lower() in TEXT_SUFFIXES | HTML_SUFFIXES)


def _open_binary(path: Path) -> BinaryIO:
    if path.name.lower().endswith(".gz"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def _read_jsonl(path: Path, relative: str, size: int,
                limits: SourceLimits) -> Iterator[SourceRecord]:
    compressed = path.name.lower().endswith(".gz")
    # Lines are read at most this long: a one-line bomb is never held in memory whole.
    budget, setting = limits.max_decompressed_bytes, "RAG_INGEST_MAX_DECOMPRESSED_BYTES"
    by_ratio = max(1 << 20, int(size * limits.max_compression_ratio))
    if compressed and by_ratio < budget:
        budget, setting = by_ratio, "RAG_INGEST_MAX_COMPRESSION_RATIO"
    read = 0
    with _open_binary(path) as handle:
        for line_no in itertools.count(1):
            try:
                raw = handle.readline(budget - read + 1)
            except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
                yield SourceRecord(relative, line_no, None, "", "", problem=(
                    f"reading stopped at line {line_no}: unreadable compressed data "
                    f"({type(exc).__name__}: {exc})"))
                return
            if not raw:
                return
            read += len(raw)
            if read > budget:
                yield SourceRecord(relative, line_no, None, "", "", problem=(
                    f"reading stopped at line {line_no}: over {budget} bytes read from a "
                    f"file of {size} bytes ({setting})"))
                return
            if raw.strip():
                yield _parse_jsonl_line(raw, relative, line_no, limits.max_json_depth)


def _storage_problem(value: object, where: str, depth: int, max_depth: int) -> str | None:
    """Why ``value`` cannot be stored (PostgreSQL text holds neither NUL nor a lone UTF-16
    surrogate; JSON nesting is bounded), or None."""
    if depth > max_depth:
        return f"{where}: nested deeper than {max_depth} levels"
    if isinstance(value, str):
        problem = unstorable_text(value)
        return None if problem is None else f"{where}: {problem}"
    items: list[tuple[str, object]] = []
    if isinstance(value, dict):
        items = [(f"{where}.{key}", key) for key in value] + \
            [(f"{where}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    for place, item in items:
        problem = _storage_problem(item, place, depth + 1, max_depth)
        if problem is not None:
            return problem
    return None


def _parse_jsonl_line(raw: bytes, source: str, line_no: int,
                      max_depth: int = 32) -> SourceRecord:
    def bad(problem: str, record_id: str | None = None) -> SourceRecord:
        return SourceRecord(source, line_no, record_id, "", "", problem=problem)

    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return bad(f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return bad(f"malformed JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return bad(f"JSON nested deeper than {max_depth} levels")
    if not isinstance(obj, dict):
        return bad(f"expected a JSON object, got {type(obj).__name__}")
    record_id = obj.get("_id")
    if not isinstance(record_id, str | int) or isinstance(record_id, bool) or record_id == "":
        return bad("missing or invalid '_id'")
    record_id = str(record_id)
    title = obj.get("title", "")
    text = obj.get("text")
    if not isinstance(title, str):
        return bad("'title' is not a string", record_id)
    if not isinstance(text, str):
        return bad("missing or non-string 'text'", record_id)
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    problem = _storage_problem(obj, "record", 0, max_depth)
    if problem is not None:
        return bad(problem, record_id if _storage_problem(record_id, "", 0, 1) is None
                   else None)
    return SourceRecord(source, line_no, record_id, title.strip(), text, dict(metadata or {}))


def _read_document(path: Path, relative: str) -> SourceRecord:
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SourceRecord(relative, None, None, "", "", problem=f"invalid UTF-8 at byte "
                                                                  f"{exc.start}")
    if path.suffix.lower() in HTML_SUFFIXES:
        title, text = html_to_text(content)
    else:
        title, text = _markdown_title(content), content
    return SourceRecord(relative, None, None, title or path.stem, text,
                        {"file_name": path.name})


def _markdown_title(content: str) -> str:
    for line in content.splitlines():
        stripped = line.strip()
        if stripped.startswith("# "):
            return stripped[2:].strip()
        if stripped:
            break
    return ""


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "head"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
              "article", "pre", "blockquote", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page; scripts and styles dropped."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(line for line in lines if line)
    return " ".join("".join(parser.title_parts).split()), text
