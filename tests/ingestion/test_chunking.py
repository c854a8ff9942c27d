"""Chunking in the model's own tokens: windows fit the model, titles ride along, overlap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_core.embeddings.base import Embedder
from rag_core.ingestion.chunking import ChunkingPolicy, chunk_document, content_hash, normalize
from tests.ingestion.conftest import scifact_records


def test_every_chunk_fits_the_model_window_and_carries_the_title(embedder: Embedder) -> None:
    policy = ChunkingPolicy()
    budget = policy.max_tokens - 2
    for record in scifact_records(150):
        title, body = str(record["title"]), str(record["text"])
        chunks = chunk_document(title, body, embedder.tokenizer, policy)
        assert chunks, record["_id"]
        for chunk in chunks:
            assert embedder.count_tokens(chunk.text) <= budget
            assert chunk.text.startswith(normalize(title)[:40])
            assert chunk.token_count == embedder.count_tokens(chunk.text)
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_long_text_is_covered_with_overlap_and_whole_words(embedder: Embedder) -> None:
    words = [f"word{i}" for i in range(1200)]
    body = " ".join(words)
    policy = ChunkingPolicy(max_tokens=128, overlap_tokens=16)
    chunks = chunk_document("", body, embedder.tokenizer, policy)
    assert len(chunks) > 5
    pieces = [c.text.split() for c in chunks]
    covered = {w for piece in pieces for w in piece}
    assert covered == set(words)  # nothing lost, no word cut in half
    for previous, current in itertools.pairwise(pieces):
        assert previous[-1] in current or current[0] in previous  # windows overlap


def test_short_document_is_one_chunk_and_empty_body_keeps_title(embedder: Embedder) -> None:
    only = chunk_document("A title", "short body", embedder.tokenizer)
    assert [c.text for c in only] == ["A title\nshort body"]
    assert [c.text for c in chunk_document("Just a title", "  ", embedder.tokenizer)] == \
        ["Just a title"]
    assert chunk_document("", "", embedder.tokenizer) == []


def test_hash_is_insensitive_to_line_endings_and_trailing_space() -> None:
    assert content_hash("a\r\nb  \n") == content_hash("a\nb")
    assert content_hash("a b") != content_hash("a  b")


def test_policy_rejects_overlap_that_would_not_advance() -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkingPolicy(max_tokens=64, overlap_tokens=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(max_size=200), body=st.text(max_size=3000))
def test_random_text_never_exceeds_the_window(embedder: Embedder, title: str, body: str) -> None:
    policy = ChunkingPolicy(max_tokens=64, overlap_tokens=8, max_title_tokens=16)
    for chunk in chunk_document(title, body, embedder.tokenizer, policy):
        assert embedder.count_tokens(chunk.text) <= 62
        assert chunk.text.strip()
