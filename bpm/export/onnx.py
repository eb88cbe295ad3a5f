"""ONNX export of the re-ID network: FP32 with a dynamic batch axis, and an FP16 conversion.

The graph maps ``[N, 3, H, W]`` images to flattened ``[N, D]`` embeddings. Export settings are
stored in the file's metadata (``bpm.*`` keys) so that any consumer, our own
:class:`bpm.FeatureExtractor` included, knows how to prepare pixels without being told again.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from bpm.errors import BpmError, one_line
from bpm.models.input_spec import InputSpec
from bpm.models.onnx_graph import OnnxSpec

OPSET = 17
LEGACY_INPUT_NAME = "actual_input_1"
LEGACY_OUTPUT_NAME = "output1"


class NormalizedInput(nn.Module):
    """Wraps the model so that the graph takes raw 0..255 RGB and normalises inside.

    Edge pipelines then feed camera pixels straight in; the scale and shift are two cheap
    element-wise ops in front of the first convolution.
    """

    def __init__(self, model: nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.model = model
        mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images * self.scale - self.shift)


def export_onnx(model: nn.Module, path: str | Path, spec: OnnxSpec, opset: int = OPSET) -> Path:
    """Write ``model`` (FP32, eval mode) as ONNX with a dynamic batch axis and ``spec`` metadata.

    The TorchScript-based exporter is used (``dynamo=False``): on this model it is several times
    faster than the dynamo exporter, works offline and gives the same Conv/Clip graph with
    BatchNorm folded into the convolutions.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph_model: nn.Module = NormalizedInput(model, spec.input_spec) if spec.bake_normalization else model
    graph_model = graph_model.float().eval()
    dummy = torch.zeros(2, 3, *spec.resize_h_w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph_model, (dummy,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[spec.input_name], output_names=[spec.output_name],
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
        )
    proto = onnx.load(str(path))
    write_metadata(proto, spec)
    onnx.save(proto, str(path))
    return path


def write_metadata(proto, spec: OnnxSpec) -> None:
    del proto.metadata_props[:]
    for key, value in spec.metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def convert_to_fp16(src: str | Path, dst: str | Path, spec: OnnxSpec) -> Path:
    """FP16 copy of an FP32 graph: weights and activations in half precision, FP32 input/output.

    Keeping FP32 at the boundary means callers feed the same arrays to every format; the two
    Cast nodes cost nothing next to the convolutions.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    sort_nodes(proto.graph)
    write_metadata(proto, OnnxSpec(**{**spec.__dict__, "precision": "fp16"}))
    onnx.save(proto, str(dst))
    return Path(dst)


def sort_nodes(graph) -> None:
    """Reorder ``graph.node`` topologically (the FP16 converter appends its input casts at the end,
    which ONNX Runtime tolerates but the ONNX standard and ``onnx.checker`` do not)."""
    available = {""} | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise BpmError(f"ONNX graph {graph.name}: has a cycle or an undefined input; cannot sort it")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` with full shape inference; a failure is a :class:`BpmError` naming the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BpmError(f"{path}: onnx.checker rejected the exported graph ({one_line(exc)})") from exc
