"""Tracing the MiniLM encoder to ONNX, checked against torch before the file is trusted.

FastEmbed's loader takes ``model.onnx`` from the folder given as ``specific_model_path``, feeds
``input_ids``/``attention_mask``/``token_type_ids``, and mean-pools + L2-normalises the first
output; hence the graph outputs token embeddings rather than a pooled vector.

:func:`export_fp32` traces with the legacy TorchScript exporter (the torch.export-based one
needs onnxscript, which is not a dependency) on a padded batch, then runs the ONNX graph on
a batch of another shape and compares it with torch: a bad trace (frozen axes, unmasked
padding) fails here rather than showing up later as poor retrieval.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import MODEL_ID

if TYPE_CHECKING:  # torch is imported lazily: it takes seconds and only the export needs it
    import torch

__all__ = ["INPUT_NAMES", "OPSET", "OUTPUT_NAME", "export_fp32"]

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
# max |onnx - torch| on a padded probe batch; fp32 re-association noise is ~1e-6
_PARITY_TOLERANCE = 1e-4


def export_fp32(source_dir: Path, onnx_path: Path) -> None:
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
