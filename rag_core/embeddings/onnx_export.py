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

FastEmbed's loader takes ``model.onnx`` from the folder given as ``specific_model_path``, feeds
``input_ids``/``attention_mask``/``token_type_ids``, and mean-pools + L2-normalises the first
output; hence the graph outputs token embeddings rather than a pooled vector.

The export is idempotent and crash-safe: everything is written into a temporary sibling
directory (fsynced), the manifest last, and only then renamed into place. A folder is trusted
only if its manifest matches the current source weights and settings, so a crash mid-export
leaves at worst an ignored temporary directory (removed by the next export).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import WEIGHTS_FILE, force_offline, packaged_model_dir, sha256_file
from .base import MAX_TOKENS, MODEL_ID

if TYPE_CHECKING:  # torch is imported lazily: it takes seconds and only the export needs it
    import torch

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
2: int8 per channel, FFN output projections kept in fp32 (see ``_quantize_int8``).
"""

OPSET = 17
MANIFEST_NAME = "manifest.json"
ONNX_FILE = "model.onnx"
VARIANTS = ("fp32", "int8")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CONFIG_FILES = ("config.json",)
# max |onnx - torch| on a padded probe batch; fp32 re-association noise is ~1e-6
_PARITY_TOLERANCE = 1e-4


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
    force_offline()
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
    _fsync_dir(dest_dir.parent)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


def _build_export(
    out_dir: Path, source_dir: Path, source_sha: str, variants: tuple[str, ...]
) -> dict[str, Any]:
    import onnxruntime
    import torch

    fp32_dir = out_dir / "fp32"
    fp32_dir.mkdir()
    _export_fp32(source_dir, fp32_dir / ONNX_FILE)
    _write_tokenizer_and_config(source_dir, fp32_dir)

    if "int8" in variants:
        int8_dir = out_dir / "int8"
        int8_dir.mkdir()
        _quantize_int8(fp32_dir / ONNX_FILE, int8_dir / ONNX_FILE)
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
        _fsync_dir(variant_dir)
        manifest["variants"][variant] = {"files": files}

    manifest_path = out_dir / MANIFEST_NAME
    with open(manifest_path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(out_dir)
    return manifest


def _export_fp32(source_dir: Path, onnx_path: Path) -> None:
    """Trace the BERT encoder to ONNX and check the result against torch on a padded batch."""
    import numpy as np
    import torch
    from transformers import AutoModel

    # eager attention: sdpa's masking fast paths branch on mask *values*, which tracing
    # would freeze into the graph
    model = AutoModel.from_pretrained(
        str(source_dir), attn_implementation="eager", local_files_only=True
    )
    # eval() on the wrapper, not just the model: torch.onnx.export restores the wrapper's
    # training flag afterwards, recursively, which would re-enable dropout for the probe below
    encoder = _last_hidden_state_module(model).eval()

    # the probe batch contains padding so that the traced graph keeps the attention mask path
    input_ids = torch.tensor(
        [[101, 7592, 2088, 2003, 1037, 3231, 1012, 102], [101, 7592, 102, 0, 0, 0, 0, 0]]
    )
    attention_mask = (input_ids != 0).to(torch.int64)
    token_type_ids = torch.zeros_like(input_ids)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, OUTPUT_NAME)}

    with torch.no_grad(), warnings.catch_warnings():
        _ignore_expected_export_warnings()
        torch.onnx.export(
            encoder,
            (input_ids, attention_mask, token_type_ids),
            str(onnx_path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            # the torch.export-based exporter needs onnxscript, which is not a dependency
            dynamo=False,
        )

    # parity on a batch of another shape proves the batch/sequence axes really are dynamic
    # and that padding is masked; a bad trace would otherwise only show up as poor retrieval
    probe = torch.tensor(
        [
            [101, 2023, 2003, 1037, 2936, 6251, 2007, 2062, 19204, 2015, 1012, 102],
            [101, 2460, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [101, 1037, 2117, 2028, 1010, 6580, 2135, 102, 0, 0, 0, 0],
        ]
    )
    probe_mask = (probe != 0).to(torch.int64)
    probe_types = torch.zeros_like(probe)
    with torch.no_grad():
        expected = encoder(probe, probe_mask, probe_types).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(
        [OUTPUT_NAME],
        {
            "input_ids": probe.numpy(),
            "attention_mask": probe_mask.numpy(),
            "token_type_ids": probe_types.numpy(),
        },
    )
    valid = probe_mask.numpy().astype(bool)
    error = float(np.max(np.abs(np.asarray(actual)[valid] - expected[valid])))
    if not error <= _PARITY_TOLERANCE:
        raise RuntimeError(
            f"ONNX export of {MODEL_ID} disagrees with torch (max abs error {error:.2e})"
        )


def _ignore_expected_export_warnings() -> None:
    """Silence the warnings the legacy TorchScript exporter is known to emit for BERT.

    Call inside ``warnings.catch_warnings()``. Each filter is narrow and harmless here:
    the deprecation notices concern the exporter choice (see ``dynamo=False``); the
    TracerWarning is transformers comparing the mask length with the sequence length (equal by
    construction, checked by the parity probe); the aten::index note concerns negative indices,
    which BERT's position-id slicing never produces.
    """
    from torch.jit._trace import TracerWarning  # public as torch.jit.TracerWarning

    warnings.filterwarnings(
        "ignore",
        message=r"You are using the legacy TorchScript-based ONNX export",
        category=DeprecationWarning,
    )
    warnings.filterwarnings(
        "ignore",
        message=r"The feature will be removed",
        category=DeprecationWarning,
        module=r"torch\.onnx\.",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"Converting a tensor to a Python boolean",
        category=TracerWarning,
        module=r"transformers\.masking_utils",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"Exporting aten::index operator of advanced indexing",
        category=UserWarning,
    )


def _quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantisation (int8 weights, activations quantised at run time) for CPU.

    Plain ``quantize_dynamic`` (per-tensor, every MatMul) gives cosines as low as 0.89 against
    the fp32 model: the input of each FFN output projection (the GELU output, 1536 wide) has
    outliers that a single uint8 activation scale cannot represent. Those six MatMuls stay
    fp32 and the other weights are quantised per output channel. Measured on ~270 texts
    against sentence-transformers (one text per run, see the FastEmbed backend): min cosine
    0.988, mean 0.997, about twice the fp32 speed. Keeping the FFN input projections in fp32
    too reached min 0.996 but lost most of the speed-up.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with open(fp32_path.parent / "config.json", encoding="utf-8") as fh:
        num_layers = int(json.load(fh)["num_hidden_layers"])
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    ffn_output = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and _FFN_OUTPUT_MATMUL.search(node.name)
    ]
    if len(ffn_output) != num_layers:  # node naming of the exporter changed
        raise RuntimeError(
            f"expected {num_layers} FFN output MatMuls in {fp32_path}, found {len(ffn_output)}"
        )
    with _without_log_message(_PREPROCESS_HINT):
        quantize_dynamic(
            fp32_path,
            int8_path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=ffn_output,
        )


_FFN_OUTPUT_MATMUL = re.compile(r"/layer\.\d+/output/dense/MatMul$")
# quantize_dynamic logs this on the root logger; the suggested pre-processing (symbolic shape
# inference) fails on this graph and brings nothing for dynamic quantisation
_PREPROCESS_HINT = "Please consider to run pre-processing before quantization"


@contextlib.contextmanager
def _without_log_message(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` for the duration of the block."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_hidden_state_module(model: Any) -> torch.nn.Module:
    """Wrap the encoder so the traced graph takes three tensors and returns token embeddings."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            output = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            hidden: torch.Tensor = output.last_hidden_state
            return hidden

    return LastHiddenState(model)
