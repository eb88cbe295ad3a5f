"""The fine-tuned network (:mod:`bpm.export.qat`) as the QDQ graph ONNX Runtime runs in INT8.

Every simulated rounding becomes a QuantizeLinear/DequantizeLinear pair carrying the scale and zero
point fine-tuning learned, and every convolution reads its weights as int8 through a
DequantizeLinear, as ORT's own quantiser writes them. ORT fuses the pairs into QLinearConv and
QLinearAdd, so the file computes what fine-tuning simulated, up to the rounding of its integer
requantisation (tests/export/test_qdq.py measures it), with no re-calibration in between.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import FakeQuantize
from torch.nn.utils import parametrize

from bpm.export.onnx import OnnxSpec, export_onnx, write_metadata


class _ActivationRounding(nn.Module):
    """A frozen u8 per-tensor rounding: plain numbers, so the exporter writes one Q/DQ pair."""

    def __init__(self, fake_quant: FakeQuantize) -> None:
        super().__init__()
        self.scale, self.zero_point = float(fake_quant.scale), int(fake_quant.zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)


class _WeightRounding(nn.Module):
    """A frozen s8 per-output-channel rounding of a weight. Written with ONNX's int8 range [-128, 127]
    (the exporter knows no other); the scales keep every weight within [-127, 127] ([-64, 64] for
    7-bit weights) regardless."""

    def __init__(self, fake_quant: FakeQuantize) -> None:
        super().__init__()
        self.register_buffer("scale", fake_quant.scale.detach().clone())
        self.register_buffer("zero_point", torch.zeros(len(fake_quant.scale), dtype=torch.int32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(weight, self.scale, self.zero_point, 0, -128, 127)


def frozen_copy(student: nn.Module) -> nn.Module:
    """``student`` (ranges frozen) with each ``FakeQuantize`` replaced by a fixed rounding module:
    ``FakeQuantize.forward`` branches on its state tensors, which the ONNX exporter cannot trace."""
    frozen = copy.deepcopy(student).eval()
    for owner in list(frozen.modules()):
        for name, child in list(owner.named_children()):
            if isinstance(child, FakeQuantize) and child.qscheme == torch.per_tensor_affine:
                setattr(owner, name, _ActivationRounding(child))
    for conv in frozen.modules():
        if isinstance(conv, nn.Conv2d) and parametrize.is_parametrized(conv, "weight"):
            conv.parametrizations.weight[0] = _WeightRounding(conv.parametrizations.weight[0].fake_quant)
    return frozen


def _constants_as_initializers(graph) -> None:
    """Constant nodes and Identity copies of initializers become initializers of their own: each
    DequantizeLinear then owns its scale and zero point, which ORT's graph rewrites (e.g. its exact
    u8 x u8 kernels on AVX2) require."""
    from onnx import numpy_helper

    for node in [n for n in graph.node if n.op_type == "Constant"]:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0]))
        graph.node.remove(node)
    initializers = {i.name: i for i in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers]:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(initializers[node.input[0]]),
                                                         node.output[0]))
        graph.node.remove(node)


def _fold_weight_quantization(graph) -> None:
    """Each QuantizeLinear of a constant weight becomes the int8 weight itself, read by the
    DequantizeLinear that followed (with its own copy of the scale and zero point)."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in initializers]:
        weight, scale, zero_point = (numpy_helper.to_array(initializers[name]) for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        shape[axis] = -1
        quantized = np.clip(np.rint(weight / scale.reshape(shape)) + zero_point.reshape(shape), -128, 127).astype(np.int8)
        stem = node.input[0]
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{stem}_quantized"),
                                  numpy_helper.from_array(scale, f"{stem}_scale"),
                                  numpy_helper.from_array(zero_point, f"{stem}_zero_point")])
        for dequantize in readers[node.output[0]]:
            dequantize.input[0], dequantize.input[1], dequantize.input[2] = \
                f"{stem}_quantized", f"{stem}_scale", f"{stem}_zero_point"
        graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(initializer)


def export_fine_tuned(student: nn.Module, path: str | Path, spec: OnnxSpec, opset: int = 17) -> Path:
    """Write the fine-tuned ``student`` (:func:`bpm.export.qat.finetune_for_int8`) as an INT8 QDQ ONNX
    graph at ``path``, with ``spec`` metadata (precision ``int8``)."""
    import onnx

    path = export_onnx(frozen_copy(student), path, spec, opset)
    proto = onnx.load(str(path))
    _constants_as_initializers(proto.graph)
    _fold_weight_quantization(proto.graph)
    write_metadata(proto, OnnxSpec(**{**spec.__dict__, "precision": "int8"}))
    onnx.save(proto, str(path))
    return path
