"""ONNX export idempotency/validation and tokenizer agreement between backends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag_core.embeddings import (
    MAX_TOKENS,
    MODEL_ID,
    Embedder,
    EmbeddingModelUnavailableError,
    export_onnx,
    load_tokenizer,
)
from rag_core.embeddings._common import packaged_model_dir
from rag_core.embeddings.fastembed_backend import FastEmbedEmbedder


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(path.relative_to(directory)): (
            path.stat().st_ino,
            path.stat().st_size,
            path.stat().st_mtime_ns,
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_export_layout(export_dir: Path) -> None:
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["model_id"] == MODEL_ID
    assert manifest["opset"] == 17
    assert len(manifest["source_sha256"]) == 64
    for variant in ("fp32", "int8"):
        folder = export_dir / variant
        for name in (
            "model.onnx",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "config.json",
        ):
            assert (folder / name).is_file(), folder / name
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config["model_max_length"] == MAX_TOKENS
    # int8 is a real quantisation, not a copy
    assert (export_dir / "int8" / "model.onnx").stat().st_size < (
        export_dir / "fp32" / "model.onnx"
    ).stat().st_size * 0.6
    # no temporary directories left next to the export
    assert [p.name for p in export_dir.parent.iterdir() if ".tmp-" in p.name] == []


def test_onnx_graph_interface(export_dir: Path) -> None:
    import onnx

    for variant in ("fp32", "int8"):
        graph = onnx.load(str(export_dir / variant / "model.onnx")).graph
        assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
        assert [o.name for o in graph.output] == ["last_hidden_state"]
        for value in (*graph.input, graph.output[0]):
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param and dims[1].dim_param  # dynamic batch and sequence


def test_export_is_idempotent(export_dir: Path) -> None:
    before = _snapshot(export_dir)
    result = export_onnx(export_dir)
    assert result.exported is False
    assert result.fp32_dir == export_dir / "fp32"
    assert result.int8_dir == export_dir / "int8"
    assert _snapshot(export_dir) == before


@pytest.mark.slow
def test_stale_or_partial_export_is_replaced(tmp_path: Path) -> None:
    """A folder without a valid manifest (e.g. a crashed export) is never trusted."""
    dest = tmp_path / "onnx"
    (dest / "fp32").mkdir(parents=True)
    (dest / "fp32" / "model.onnx").write_bytes(b"half a model")
    leftover = tmp_path / ".onnx.tmp-crashed"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"partial")

    with pytest.raises(EmbeddingModelUnavailableError, match="manifest"):
        FastEmbedEmbedder(dest)

    result = export_onnx(dest, quantize_int8=False)
    assert result.exported is True
    assert result.int8_dir is None
    assert (dest / "fp32" / "model.onnx").stat().st_size > 1_000_000
    assert not leftover.exists()
    assert not (dest / "int8").exists()

    # a changed source-weights hash invalidates the export
    manifest_path = dest / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert export_onnx(dest, quantize_int8=False).exported is True
    assert json.loads(manifest_path.read_text())["source_sha256"] != "0" * 64

    # a truncated file (size differs from the manifest) invalidates it as well
    onnx_path = dest / "fp32" / "model.onnx"
    with open(onnx_path, "r+b") as fh:
        fh.truncate(1000)
    assert export_onnx(dest, quantize_int8=False).exported is True
    assert onnx_path.stat().st_size > 1_000_000


def test_missing_variant_is_reported(tmp_path: Path, export_dir: Path) -> None:
    dest = tmp_path / "only-fp32"
    shutil.copytree(export_dir, dest)
    shutil.rmtree(dest / "int8")
    manifest = json.loads((dest / "manifest.json").read_text())
    del manifest["variants"]["int8"]
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EmbeddingModelUnavailableError) as excinfo:
        FastEmbedEmbedder(dest, variant="int8")
    assert excinfo.value.model_id == MODEL_ID
    assert excinfo.value.path == dest / "int8"


TOKEN_TEXTS = [
    "Hello, world!",
    "",
    "   ",
    "Ünïcödé naïve café résumé, Straße, 東京タワー and an emoji 😀.",
    "unbelievably hyperparameterisation of transformer-based encoders",
    "SELECT count(*) FROM docs WHERE tenant_id = $1; -- [SEP] [CLS] literal",
    "E = mc^2\n\ttabs\r\nand newlines",
    "The printing press transformed Europe. " * 120,  # far beyond 512 tokens
]


def test_token_counts_agree_between_backends(
    st_embedder: Embedder, fe_embedder: Embedder, fe_int8_embedder: Embedder
) -> None:
    for text in TOKEN_TEXTS:
        count = st_embedder.count_tokens(text)
        offsets = st_embedder.token_offsets(text)
        assert len(offsets) == count
        for other in (fe_embedder, fe_int8_embedder, fe_embedder.tokenizer):
            assert other.count_tokens(text) == count
            assert other.token_offsets(text) == offsets


def test_tokens_match_hugging_face_tokenizer() -> None:
    from transformers import AutoTokenizer

    model_dir = packaged_model_dir()
    hf = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    ours = load_tokenizer(model_dir)
    for text in TOKEN_TEXTS:
        encoded = hf(text, add_special_tokens=False, return_offsets_mapping=True)
        assert ours.count_tokens(text) == len(encoded["input_ids"])
        assert ours.token_offsets(text) == [tuple(o) for o in encoded["offset_mapping"]]


def test_token_offsets_point_into_the_text(st_embedder: Embedder) -> None:
    text = "Tenant isolation: row-level security in PostgreSQL."
    pieces = [text[start:end] for start, end in st_embedder.token_offsets(text)]
    assert pieces[:3] == ["Tenant", "isolation", ":"]
    assert "PostgreSQL" in "".join(pieces)
