"""The three backends against each other, with the real packaged model (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from rag_core.embeddings import (
    DIMENSION,
    MAX_TOKENS,
    MODEL_ID,
    SPECIAL_TOKENS_PER_INPUT,
    Embedder,
    EmbeddingModelUnavailableError,
    load_embedder,
)


def _row_cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    dots = np.sum(a64 * b64, axis=1)
    result: npt.NDArray[np.float64] = dots / (
        np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    )
    return result


def test_texts_cover_the_truncation_window(st_embedder: Embedder, mixed_texts: list[str]) -> None:
    counts = [st_embedder.count_tokens(t) for t in mixed_texts]
    assert len(mixed_texts) >= 20
    assert sum(c > MAX_TOKENS for c in counts) >= 4
    assert any(c > 512 for c in counts)  # beyond BERT's own 512 positions as well


def test_fastembed_fp32_matches_sentence_transformers(
    st_embedder: Embedder, fe_embedder: Embedder, mixed_texts: list[str], queries: list[str]
) -> None:
    passages = _row_cosines(
        fe_embedder.embed_passages(mixed_texts), st_embedder.embed_passages(mixed_texts)
    )
    assert passages.min() >= 0.9999, passages
    query_cos = _row_cosines(fe_embedder.embed_queries(queries), st_embedder.embed_queries(queries))
    assert query_cos.min() >= 0.9999, query_cos


def test_fastembed_int8_close_to_sentence_transformers(
    st_embedder: Embedder,
    fe_int8_embedder: Embedder,
    mixed_texts: list[str],
    queries: list[str],
) -> None:
    passages = _row_cosines(
        fe_int8_embedder.embed_passages(mixed_texts), st_embedder.embed_passages(mixed_texts)
    )
    query_cos = _row_cosines(
        fe_int8_embedder.embed_queries(queries), st_embedder.embed_queries(queries)
    )
    print(
        f"int8 vs sentence-transformers: passages min {passages.min():.4f}, "
        f"mean {passages.mean():.4f}; queries min {query_cos.min():.4f}"
    )
    assert passages.min() >= 0.98, passages
    assert query_cos.min() >= 0.98, query_cos


def test_int8_preserves_retrieval_ranking(
    st_embedder: Embedder, fe_int8_embedder: Embedder, long_texts: list[str]
) -> None:
    """Each topical query must find the same best document with int8 as with fp32."""
    queries = ["sea level rise and warming", "database indexes and transactions", "Gutenberg"]
    docs = long_texts[:3]
    for embedder in (st_embedder, fe_int8_embedder):
        scores = embedder.embed_queries(queries) @ embedder.embed_passages(docs).T
        assert list(np.argmax(scores, axis=1)) == [0, 1, 2]


def test_shape_dtype_and_unit_norm(any_embedder: Embedder, mixed_texts: list[str]) -> None:
    vectors = any_embedder.embed_passages(mixed_texts, batch_size=7)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(mixed_texts), DIMENSION)
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert any_embedder.dimension == DIMENSION
    assert any_embedder.max_tokens == MAX_TOKENS
    assert any_embedder.model_id == MODEL_ID


def test_deterministic(any_embedder: Embedder, mixed_texts: list[str]) -> None:
    first = any_embedder.embed_passages(mixed_texts)
    second = any_embedder.embed_passages(mixed_texts)
    assert np.array_equal(first, second)
    query = ["same query"]
    assert np.array_equal(any_embedder.embed_queries(query), any_embedder.embed_queries(query))


def test_batch_size_does_not_change_results(any_embedder: Embedder, mixed_texts: list[str]) -> None:
    one_batch = any_embedder.embed_passages(mixed_texts, batch_size=64)
    small_batches = any_embedder.embed_passages(mixed_texts, batch_size=3)
    alone = np.vstack([any_embedder.embed_passages([t]) for t in mixed_texts[::4]])
    if any_embedder.backend == "fastembed-int8":
        # activation scales are per run, so int8 embeds one text per run: bit-identical
        assert np.array_equal(one_batch, small_batches)
        assert np.array_equal(one_batch[::4], alone)
    else:
        assert _row_cosines(one_batch, small_batches).min() >= 0.9999
        assert _row_cosines(one_batch[::4], alone).min() >= 0.9999


def test_output_order_follows_input_order(any_embedder: Embedder, mixed_texts: list[str]) -> None:
    forward = any_embedder.embed_passages(mixed_texts)
    backward = any_embedder.embed_passages(mixed_texts[::-1])
    assert _row_cosines(forward, backward[::-1]).min() >= 0.9999


def test_empty_input(any_embedder: Embedder) -> None:
    for vectors in (any_embedder.embed_passages([]), any_embedder.embed_queries([])):
        assert vectors.shape == (0, DIMENSION)
        assert vectors.dtype == np.float32


def test_single_string_is_rejected(any_embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="single str"):
        any_embedder.embed_passages("not a list")  # type: ignore[arg-type]


def test_text_beyond_window_is_truncated_at_256_tokens(
    any_embedder: Embedder, long_texts: list[str]
) -> None:
    """Only the first 254 wordpieces (+ [CLS], [SEP]) count: FastEmbed must not use 512."""
    text = long_texts[2]
    offsets = any_embedder.token_offsets(text)
    assert len(offsets) > 512
    content_tokens = MAX_TOKENS - SPECIAL_TOKENS_PER_INPUT
    head = text[: offsets[content_tokens - 1][1]]
    assert any_embedder.count_tokens(head) == content_tokens
    full, truncated = any_embedder.embed_passages([text, head])
    assert float(full @ truncated) >= 0.9999


def test_backend_names_and_versions(
    st_embedder: Embedder, fe_embedder: Embedder, fe_int8_embedder: Embedder
) -> None:
    assert st_embedder.backend == "sentence-transformers"
    assert fe_embedder.backend == "fastembed"
    assert fe_int8_embedder.backend == "fastembed-int8"
    # same weights, same numeric variant: interchangeable vectors, same version
    assert st_embedder.model_version == fe_embedder.model_version
    assert st_embedder.model_version.endswith("-fp32")
    assert fe_int8_embedder.model_version.endswith("-int8")
    assert fe_int8_embedder.model_version.split("-")[0] == fe_embedder.model_version.split("-")[0]
    for embedder in (st_embedder, fe_embedder, fe_int8_embedder):
        assert isinstance(embedder, Embedder)


def test_registry_caches_per_process(state_dir: Path, fe_embedder: Embedder) -> None:
    assert load_embedder("fastembed", state_dir=state_dir) is fe_embedder


def test_unknown_backend_is_rejected(state_dir: Path) -> None:
    with pytest.raises(ValueError, match="'openai'"):
        load_embedder("openai", state_dir=state_dir)


@pytest.mark.parametrize("backend", ["fastembed", "fastembed-int8"])
def test_missing_export_names_the_model(backend: str, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelUnavailableError) as excinfo:
        load_embedder(backend, state_dir=tmp_path)
    error = excinfo.value
    assert error.model_id == MODEL_ID
    assert MODEL_ID in str(error)
    assert "ensure_models" in str(error)
    assert error.path == tmp_path / "models" / "all-MiniLM-L6-v2-onnx"
