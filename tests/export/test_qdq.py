"""The fine-tuned network written as QDQ: ONNX Runtime computes what fine-tuning simulated, with its scales."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.ao.quantization import FakeQuantize

from bpm.export.onnx import OnnxSpec
from bpm.export.qat import finetune_for_int8
from bpm.export.qdq import export_fine_tuned
from bpm.models.onnx_graph import OnnxModel, cannot_saturate, session_options
from bpm.models.reid import build_model

SIZE = (64, 32)


#: Convolutions and residual sums per backbone: every one must run on ORT's integer kernels.
INTEGER_OPS = {"mobilenetV2": {"QLinearConv": 52, "QLinearAdd": 10},
               "efficientnet_lite0": {"QLinearConv": 49, "QLinearAdd": 9}}


def _tune(tmp_path_factory, weight_bits: int, net: str = "mobilenetV2"):
    """A ``net`` fine-tuned 2 epochs on random images, and its QDQ file."""
    torch.manual_seed(3)
    model = build_model(net).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.1, 0.1)
    images = [torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(32)]
    student, _ = finetune_for_int8(model, images, lambda items: torch.stack(list(items)), epochs=2, lr=1e-3,
                                   batch_size=16, weight_bits=weight_bits)
    path = export_fine_tuned(student, tmp_path_factory.mktemp("qdq") / "tuned_int8.onnx",
                             OnnxSpec(net, SIZE))
    return student, path


@pytest.fixture(scope="module", params=sorted(INTEGER_OPS))
def tuned(request, tmp_path_factory):
    """MobileNet-V2, and EfficientNet-Lite0 (whose stride-2 convolutions pad explicitly, TF's "SAME")."""
    return _tune(tmp_path_factory, 8, request.param)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_runtime_computes_what_fine_tuning_simulated(tuned):
    """With ORT's exact integer kernels (the same integers on every CPU kind), the file's features are
    the fake-quantised network's, up to the rounding of ORT's integer requantisation."""
    student, path = tuned
    x = torch.rand(8, 3, *SIZE, generator=torch.Generator().manual_seed(99)) * 2 - 1
    with torch.no_grad():
        simulated = student(x).numpy()
    runtime = OnnxModel(path, threads=1, precise_int8=True)(x.numpy())
    assert runtime.shape == simulated.shape
    assert _cosines(runtime, simulated).min() > 0.9999
    scale = np.abs(simulated).max()
    assert np.abs(runtime - simulated).max() < 0.02 * scale
    assert OnnxModel(path).spec.precision == "int8"


def test_the_file_carries_the_tuned_scales_and_weights(tuned):
    """Read back: every activation scale is one fine-tuning learned, every weight the int8 rounding of
    the tuned weight on its own per-channel grid (max |w| / 127), nothing re-calibrated."""
    student, path = tuned
    graph = onnx.load(str(path)).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    activation_scales = sorted(initializers[n.input[1]].item() for n in graph.node if n.op_type == "QuantizeLinear")
    learned = sorted(float(m.scale) for m in student.modules()
                     if isinstance(m, FakeQuantize) and m.qscheme == torch.per_tensor_affine)
    assert len(activation_scales) == len(learned)
    np.testing.assert_allclose(activation_scales, learned, rtol=1e-6)
    int8_weights = {name: value for name, value in initializers.items() if value.dtype == np.int8 and value.ndim == 4}
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
    assert len(int8_weights) == len(convs)
    for conv in convs:
        weight = conv.parametrizations.weight.original.detach().numpy()
        scale = np.abs(weight).reshape(len(weight), -1).max(1) / 127
        rounded = np.clip(np.rint(weight / scale.reshape(-1, 1, 1, 1)), -127, 127)
        assert any(stored.shape == weight.shape and np.array_equal(stored, rounded)
                   for stored in int8_weights.values()), "a tuned weight is not stored as its own int8 rounding"
    assert all(np.abs(w.astype(np.int16)).max() <= 127 for w in int8_weights.values())


def test_onnx_runtime_runs_every_convolution_in_int8(tuned, tmp_path):
    """No float convolution survives ORT's QDQ fusion: the file runs on the integer kernels."""
    import onnxruntime as ort

    _, path = tuned
    options = session_options(threads=1, precise_int8=False)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable fusions only
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    expected = INTEGER_OPS[OnnxModel(path).spec.net]
    assert ops["QLinearConv"] == expected["QLinearConv"] and ops["Conv"] == 0, ops
    assert ops["QLinearAdd"] == expected["QLinearAdd"], ops


def test_seven_bit_fine_tuning_runs_exactly_on_the_fast_kernels(tmp_path_factory):
    """--int8_weight_bits 7 with fine-tuning: weights within [-64, 64], so ORT's fast u8 x s8 kernels
    cannot saturate and compute the simulation's integers on every CPU kind (AVX2 included)."""
    student, path = _tune(tmp_path_factory, 7)
    proto = onnx.load(str(path))
    weights = [numpy_helper.to_array(i) for i in proto.graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == 64
    assert cannot_saturate(proto)
    x = torch.rand(8, 3, *SIZE, generator=torch.Generator().manual_seed(98)) * 2 - 1
    with torch.no_grad():
        simulated = student(x).numpy()
    fast = OnnxModel(path, threads=1, precise_int8=False)(x.numpy())
    assert _cosines(fast, simulated).min() > 0.9999
