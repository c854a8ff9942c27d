"""Arbitrary bytes in a source file never end in an exception: every line becomes a record or
a rejected record (which the planning transaction stores in ingestion_errors)."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_core.ingestion.sources import SourceLimits, read_source

LIMITS = SourceLimits(max_file_bytes=1 << 16, max_compression_ratio=4.0, max_json_depth=8)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that look like JSON lines often enough to reach the parser's later branches.
JSONISH = st.lists(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.one_of(st.text(max_size=20), st.integers(), st.none()),
                 lambda inner: st.one_of(st.lists(inner, max_size=3),
                                         st.dictionaries(st.text(max_size=8), inner,
                                                         max_size=3)),
                 max_leaves=12).map(lambda value: json.dumps(value).encode()),
    st.builds(lambda i, t, m: b'{"_id": %s, "text": %s, "metadata": %s}' % (i, t, m),
              st.sampled_from([b'"a"', b"1", b"null", b'""', b"true"]),
              st.one_of(st.binary(max_size=40).map(lambda b: b'"' + b + b'"'),
                        st.sampled_from([b'"\\ud800"', b'"a\\u0000b"', b"[]"])),
              st.sampled_from([b"{}", b"[]", b'{"k": "\\udfff"}', b"[" * 20 + b"]" * 20])),
), max_size=12).map(b"\n".join)


def _read(name: str, payload: bytes) -> list[tuple[int | None, str | None]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(payload)
        return [(r.line_no, r.problem) for r in read_source(path, LIMITS)]


@FUZZ
@given(JSONISH)
def test_any_jsonl_bytes_give_records_never_an_exception(payload: bytes) -> None:
    records = _read("corpus.jsonl", payload)
    assert len(records) <= payload.count(b"\n") + 1


@FUZZ
@given(JSONISH, st.booleans())
def test_any_gzip_bytes_give_records_never_an_exception(payload: bytes,
                                                        compress: bool) -> None:
    # valid gzip of arbitrary lines, or arbitrary bytes that only claim to be gzip
    data = gzip.compress(payload) if compress else payload
    _read("corpus.jsonl.gz", data)


def test_a_corrupt_gzip_is_one_rejected_record(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"_id": "1", "text": "one"}\n' * 50)[:40])  # truncated
    records = list(read_source(path, LIMITS))
    assert records and records[-1].problem is not None
    assert "unreadable compressed data" in records[-1].problem
