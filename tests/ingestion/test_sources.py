"""Reading sources: folders of text/markdown/HTML, BEIR JSONL (plain and gzip), bad lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rag_core.ingestion.sources import (
    SourceError,
    SourceLimits,
    fingerprint,
    html_to_text,
    read_source,
)


def test_folder_of_text_markdown_and_html(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain text body")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Heading\n\nmarkdown body")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page  title</title><style>p{}</style></head><body>"
        "<script>var x = 1;</script><p>First&nbsp;para</p><p>Second</p></body></html>")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    records = list(read_source(tmp_path))
    assert [r.source for r in records] == ["a.txt", "c.html", "sub/b.md"]
    by_source = {r.source: r for r in records}
    assert by_source["a.txt"].title == "a" and by_source["a.txt"].text == "plain text body"
    assert by_source["sub/b.md"].title == "Heading"
    assert by_source["c.html"].title == "Page title"
    assert by_source["c.html"].text == "First para\nSecond"
    assert all(r.problem is None for r in records)
    assert by_source["a.txt"].source_uri == "a.txt"


def test_beir_jsonl_plain_and_gzip_give_the_same_records(tmp_path: Path) -> None:
    lines = [{"_id": "d1", "title": "T1", "text": "one", "metadata": {"k": 1}},
             {"_id": 2, "title": "T2", "text": "two"}]
    payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    (tmp_path / "plain" / "corpus.jsonl").write_bytes(payload)
    with gzip.open(tmp_path / "gz" / "corpus.jsonl.gz", "wb") as handle:
        handle.write(payload)
    plain = list(read_source(tmp_path / "plain" / "corpus.jsonl"))
    packed = list(read_source(tmp_path / "gz" / "corpus.jsonl.gz"))
    assert [(r.record_id, r.title, r.text, r.line_no) for r in plain] == \
        [("d1", "T1", "one", 1), ("2", "T2", "two", 2)]
    assert [(r.record_id, r.title, r.text) for r in packed] == \
        [(r.record_id, r.title, r.text) for r in plain]
    assert plain[0].source_uri == "corpus.jsonl#d1"
    assert plain[0].metadata == {"k": 1}


def test_bad_lines_are_yielded_with_their_problem_and_line_number(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "ok", "title": "", "text": "fine"}\n'
                     b'{"_id": "broken", "text": \n'
                     b'\n'
                     b'{"_id": "bad-utf8", "text": "caf\xe9"}\n'
                     b'["not", "an", "object"]\n'
                     b'{"title": "no id", "text": "x"}\n'
                     b'{"_id": "no-text", "title": "t"}\n')
    records = list(read_source(path))
    assert [(r.line_no, r.problem) for r in records] == [
        (1, None),
        (2, "malformed JSON: Expecting value at column 27"),
        (4, "invalid UTF-8 at byte 32"),
        (5, "expected a JSON object, got list"),
        (6, "missing or invalid '_id'"),
        (7, "missing or non-string 'text'"),
    ]


def test_missing_or_unsupported_source_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        list(read_source(tmp_path / "nope"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(SourceError, match="expected a folder"):
        list(read_source(tmp_path / "x.csv"))
    with pytest.raises(SourceError, match=r"no \.txt"):
        list(read_source(tmp_path))


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "1", "text": "a"}\n')
    first = fingerprint(path)
    assert fingerprint(path) == first
    path.write_text('{"_id": "1", "text": "b"}\n')
    assert fingerprint(path) != first


def test_html_to_text_keeps_block_structure() -> None:
    assert html_to_text("<div>a<br>b</div><ul><li>c</li><li>d</li></ul>") == ("", "a\nb\nc\nd")


def test_a_symlink_leaving_the_source_folder_refuses_the_source(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-tenant"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("another tenant's document")
    source = tmp_path / "docs"
    source.mkdir()
    (source / "mine.txt").write_text("my document")
    for link, target in ((source / "pulled.txt", elsewhere / "secret.txt"),
                         (source / "folder", elsewhere)):
        link.symlink_to(target)
        with pytest.raises(SourceError) as refused:
            list(read_source(source))
        assert str(link) in str(refused.value) and str(target) in str(refused.value)
        with pytest.raises(SourceError):
            fingerprint(source)
        link.unlink()
    assert [r.text for r in read_source(source)] == ["my document"]


def test_a_symlink_inside_the_source_folder_is_not_read_twice(tmp_path: Path) -> None:
    source = tmp_path / "docs"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.txt").write_text("alpha")
    (source / "alias.txt").symlink_to(source / "sub" / "a.txt")
    (source / "loop").symlink_to(source)
    assert [(r.source, r.text) for r in read_source(source)] == [("sub/a.txt", "alpha")]


def test_a_gzip_bomb_and_an_oversized_file_become_one_rejected_record_each(
        tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    bomb = source / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb") as handle:  # one line: 8 MiB of zeros in ~8 KiB
        handle.write(b'{"_id": "x", "text": "' + b"0" * (8 << 20) + b'"}\n')
    (source / "big.txt").write_text("x" * 20_000)
    (source / "fine.txt").write_text("small and fine")
    limits = SourceLimits(max_file_bytes=16_000, max_compression_ratio=10.0)
    records = {r.source: r for r in read_source(source, limits)}
    assert records["fine.txt"].problem is None
    assert records["big.txt"].problem == (
        "file of 20000 bytes, over the limit of 16000 (RAG_INGEST_MAX_FILE_BYTES)")
    problem = records["bomb.jsonl.gz"].problem
    assert problem is not None and "RAG_INGEST_MAX_COMPRESSION_RATIO" in problem
    assert "line 1" in problem
