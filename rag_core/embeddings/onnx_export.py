"""One-time ONNX export of the packaged all-MiniLM-L6-v2 weights for the FastEmbed backend.

Why export ourselves instead of letting FastEmbed download ``Qdrant/all-MiniLM-L6-v2-onnx``:
the machines are offline, and exporting the very weights the sentence-transformers backend
loads makes the two backends numerically interchangeable (cosine >= 0.9999).

Layout written under ``dest_dir``::

    manifest.json              sha256 of the source weights, export settings, file sizes
    fp32/model.onnx            token embeddings (``last_hidden_state``), opset 17
    fp32/tokenizer.json        the model's tokenizer, truncation set to 256, no fixed padding
    fp32/tokenizer_config.json ``model_max_length`` = 256 (see below)
    fp32/special_tokens_map.json, fp32/config.json
    int8/...                   same files; model.onnx dynamically quantised to int8 weights

``model_max_length`` must be 256: FastEmbed truncates at ``tokenizer_config.json``'s
``model_max_length``, which upstream is BERT's 512. all-MiniLM-L6-v2 is used (and was trained)
with a 256-token window, so at 512 every text longer than 256 tokens would get an embedding
different from the reference sentence-transformers one.

The graph (token embeddings, as FastEmbed's loader wants them) is traced and checked
against torch in :mod:`rag_core.embeddings.onnx_trace`; the int8 variant is made in
:mod:`rag_core.embeddings.onnx_quantize`. This module owns the files: what is written where,
the manifest, and when an existing export is trusted.

The export is idempotent and crash-safe: everything is written into a temporary sibling
directory (fsynced), the manifest last, and only then renamed into place. A folder is trusted
only if its manifest matches the current source weights and settings, so a crash mid-export
leaves at worst an ignored temporary directory (removed by the next export).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_core.common.offline import forbid_hub_downloads
from rag_core.common.processes import fsync_folder

from ._common import WEIGHTS_FILE, packaged_model_dir, sha256_file
from .base import MAX_TOKENS, MODEL_ID
from .onnx_quantize import quantize_int8
from .onnx_trace import INPUT_NAMES, OPSET, OUTPUT_NAME, export_fp32

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "MANIFEST_NAME",
    "OPSET",
    "ExportResult",
    "export_onnx",
    "read_manifest",
]

EXPORT_FORMAT_VERSION = 2
"""Bump when the export procedure changes the produced files; older exports are then redone.

1: int8 quantised per tensor, every MatMul (min cosine ~0.89 vs sentence-transformers).
2: int8 per channel, FFN output projections kept in fp32 (see
   :func:`~rag_core.embeddings.onnx_quantize.quantize_int8`).
"""

MANIFEST_NAME = "manifest.json"
ONNX_FILE = "model.onnx"
VARIANTS = ("fp32", "int8")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CONFIG_FILES = ("config.json",)


@dataclass(frozen=True)
class ExportResult:
    """Where the export lives and whether this call wrote it."""

    dest_dir: Path
    fp32_dir: Path
    int8_dir: Path | None
    source_sha256: str
    exported: bool
    """False when a valid export already existed and nothing was written."""
    manifest: dict[str, Any]


def read_manifest(dest_dir: Path) -> dict[str, Any] | None:
    """The export manifest of ``dest_dir``, or None if absent or unreadable."""
    try:
        with open(dest_dir / MANIFEST_NAME, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def export_onnx(dest_dir: Path, *, quantize_int8: bool = True) -> ExportResult:
    """Export the packaged all-MiniLM-L6-v2 weights to ONNX under ``dest_dir`` (once).

    Does nothing if ``dest_dir`` already holds a complete export of the same source weights
    (and the int8 variant, when requested). Otherwise builds the export in a temporary
    directory and atomically swaps it in. Concurrent callers are serialised with a lock file
    next to ``dest_dir``.
    """
    forbid_hub_downloads()
    dest_dir = Path(dest_dir).absolute()
    source_dir = packaged_model_dir()
    source_sha = sha256_file(source_dir / WEIGHTS_FILE)
    variants = VARIANTS if quantize_int8 else ("fp32",)

    manifest = read_manifest(dest_dir)
    if manifest is not None and _manifest_valid(manifest, dest_dir, source_sha, variants):
        return _result(dest_dir, source_sha, manifest, exported=False)

    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(dest_dir.parent / f".{dest_dir.name}.lock"):
        # another process may have finished the export while this one waited for the lock
        manifest = read_manifest(dest_dir)
        if manifest is not None and _manifest_valid(manifest, dest_dir, source_sha, variants):
            return _result(dest_dir, source_sha, manifest, exported=False)

        _remove_leftovers(dest_dir)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.tmp-", dir=dest_dir.parent))
        try:
            manifest = _build_export(tmp_dir, source_dir, source_sha, variants)
            _swap_into_place(tmp_dir, dest_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return _result(dest_dir, source_sha, manifest, exported=True)


def _result(
    dest_dir: Path, source_sha: str, manifest: dict[str, Any], *, exported: bool
) -> ExportResult:
    has_int8 = "int8" in manifest.get("variants", {})
    return ExportResult(
        dest_dir=dest_dir,
        fp32_dir=dest_dir / "fp32",
        int8_dir=dest_dir / "int8" if has_int8 else None,
        source_sha256=source_sha,
        exported=exported,
        manifest=manifest,
    )


def _manifest_valid(
    manifest: dict[str, Any],
    dest_dir: Path,
    source_sha: str,
    variants: tuple[str, ...],
) -> bool:
    """True iff the manifest describes the wanted export and every listed file is intact."""
    expected = {
        "format_version": EXPORT_FORMAT_VERSION,
        "model_id": MODEL_ID,
        "source_sha256": source_sha,
        "opset": OPSET,
        "max_tokens": MAX_TOKENS,
    }
    if any(manifest.get(key) != value for key, value in expected.items()):
        return False
    recorded = manifest.get("variants")
    if not isinstance(recorded, dict) or not all(v in recorded for v in variants):
        return False
    for variant, info in recorded.items():
        files = info.get("files") if isinstance(info, dict) else None
        if not isinstance(files, dict) or ONNX_FILE not in files:
            return False
        for name, size in files.items():
            path = dest_dir / variant / name
            try:
                if path.stat().st_size != size:
                    return False
            except OSError:
                return False
    return True


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(dest_dir: Path) -> None:
    """Delete temporary/old directories of earlier exports that crashed (caller holds lock)."""
    for prefix in (f".{dest_dir.name}.tmp-", f".{dest_dir.name}.old-"):
        for path in dest_dir.parent.glob(f"{prefix}*"):
            shutil.rmtree(path, ignore_errors=True)


def _swap_into_place(tmp_dir: Path, dest_dir: Path) -> None:
    """Rename the finished export to ``dest_dir``, replacing a stale one if present."""
    old_dir: Path | None = None
    if dest_dir.exists() or dest_dir.is_symlink():
        old_dir = dest_dir.parent / f".{dest_dir.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(dest_dir, old_dir)
    os.rename(tmp_dir, dest_dir)
    fsync_folder(dest_dir.parent)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


def _build_export(
    out_dir: Path, source_dir: Path, source_sha: str, variants: tuple[str, ...]
) -> dict[str, Any]:
    import onnxruntime
    import torch

    fp32_dir = out_dir / "fp32"
    fp32_dir.mkdir()
    export_fp32(source_dir, fp32_dir / ONNX_FILE)
    _write_tokenizer_and_config(source_dir, fp32_dir)

    if "int8" in variants:
        int8_dir = out_dir / "int8"
        int8_dir.mkdir()
        quantize_int8(fp32_dir / ONNX_FILE, int8_dir / ONNX_FILE)
        for name in (*TOKENIZER_FILES, *CONFIG_FILES):
            shutil.copyfile(fp32_dir / name, int8_dir / name)

    manifest: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "model_id": MODEL_ID,
        "source_weights": WEIGHTS_FILE,
        "source_sha256": source_sha,
        "opset": OPSET,
        "max_tokens": MAX_TOKENS,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "int8_quantization": "dynamic, QInt8 weights per channel, FFN output MatMuls in fp32",
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "variants": {},
    }
    for variant in variants:
        variant_dir = out_dir / variant
        files = {}
        for path in sorted(variant_dir.iterdir()):
            _fsync_file(path)
            files[path.name] = path.stat().st_size
        fsync_folder(variant_dir)
        manifest["variants"][variant] = {"files": files}

    manifest_path = out_dir / MANIFEST_NAME
    with open(manifest_path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_folder(out_dir)
    return manifest


def _write_tokenizer_and_config(source_dir: Path, out_dir: Path) -> None:
    with open(source_dir / "tokenizer_config.json", encoding="utf-8") as fh:
        tokenizer_config = json.load(fh)
    tokenizer_config["model_max_length"] = MAX_TOKENS
    tokenizer_config.pop("max_length", None)  # FastEmbed would take the smaller of the two
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)

    # FastEmbed overrides both settings when loading, but any other consumer of this file
    # would otherwise silently truncate at the upstream 128 and pad every input to 128
    with open(source_dir / "tokenizer.json", encoding="utf-8") as fh:
        tokenizer = json.load(fh)
    if isinstance(tokenizer.get("truncation"), dict):
        tokenizer["truncation"]["max_length"] = MAX_TOKENS
    tokenizer["padding"] = None
    _write_json(out_dir / "tokenizer.json", tokenizer, indent=None)

    for name in ("special_tokens_map.json", *CONFIG_FILES):
        shutil.copyfile(source_dir / name, out_dir / name)


def _write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent, ensure_ascii=False)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
