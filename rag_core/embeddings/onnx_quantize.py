"""Dynamic int8 quantisation of the exported encoder, keeping the outlier-prone MatMuls fp32.

The int8 variant is about twice as fast as fp32 on CPU; which MatMuls stay in fp32, and why,
is measured and explained in :func:`quantize_int8`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["quantize_int8"]


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
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
