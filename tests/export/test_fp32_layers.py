"""INT8 with a few layers left in FP32: weight-rounding sensitivity per layer, the held-out choice of
how many layers stay FP32, and the images that choice is made on."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bpm.export.onnx import export_onnx
from bpm.export.options import ImageSets
from bpm.export.quantize import (MAX_DISTANCE_ERROR, ImageCalibrationReader, distance_error, quantize_int8,
                                 rounded_weights, weight_sensitivity)
from bpm.models.onnx_graph import OnnxModel, OnnxSpec
from bpm.data.transforms import image_batch

from export_helpers import SIZE


def test_rounded_weights_by_hand():
    # One output channel: step = 1 / 127; 0.5 -> 63.5 steps -> 64 (ties to even) -> 0.50394; 0.003 -> 0.
    w = np.array([[[[1.0]], [[0.5]], [[0.003]]], [[[-2.0]], [[1.0]], [[0.0]]]], dtype=np.float32)
    r = rounded_weights(w)
    assert r[0, :, 0, 0] == pytest.approx([1.0, 64 / 127, 0.0])
    assert r[1, :, 0, 0] == pytest.approx([-2.0, 2 * 64 / 127, 0.0])  # its own scale: 2 / 127
    assert r.dtype == np.float32


class _Cancelling(nn.Module):
    """conv2 reads a near-constant channel of conv1 (1 + 0.001 x) through a weight of 1000 (its bias
    cancels the constant): its small weights on the other channels round to zero in 8 bits, and the
    8-bit rounding of its input is amplified 1000 times. conv3's weights are exact in 8 bits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[0.001, 0.0, 0.0], [1.0, 0.2, -0.3], [-0.4, 0.8, 0.1],
                                                  [0.3, -0.5, 0.9]]).view(4, 3, 1, 1))
            self.conv1.bias.copy_(torch.tensor([1.0, 0.0, 0.1, -0.1]))  # channel 0: 1 + 0.001 x
            weight = torch.tensor([[0.3, -0.2, 0.25], [0.1, 0.3, -0.2], [-0.3, 0.2, 0.1], [0.2, 0.1, 0.3]])
            self.conv2.weight.copy_(torch.cat([torch.full((4, 1), 1000.0), weight], dim=1).view(4, 4, 1, 1))
            self.conv2.bias.fill_(-1000.0)
            self.conv3.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
            self.conv3.bias.zero_()

    def forward(self, x):
        return self.pool(self.conv3(torch.relu(self.conv2(self.conv1(x))))).flatten(1)


@pytest.fixture(scope="module")
def cancelling_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32_layers") / "cancelling.onnx"
    spec = OnnxSpec("toy", SIZE)
    export_onnx(_Cancelling().eval(), path, spec)
    return path, spec


def _convs(path) -> list[str]:
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]


def test_the_layer_whose_weights_alone_hurt_ranks_first(cancelling_graph, image_paths):
    path, spec = cancelling_graph
    ranking = weight_sensitivity(path, ImageCalibrationReader(image_paths[:16], spec))
    conv1, conv2, conv3 = _convs(path)
    relu = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Relu"]
    assert [names for names, _ in ranking] == [(conv2, *relu), (conv1,), (conv3,)]  # a fused activation goes along
    cosines = [cosine for _, cosine in ranking]
    assert cosines[0] < 0.99 and 0.99 < cosines[1] < 1.0 and cosines[2] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("quant_format", ["qdq", "qoperator"])
def test_failing_int8_keeps_the_worst_layers_fp32_until_held_out_images_agree(cancelling_graph, image_paths,
                                                                               tmp_path, quant_format):
    path, spec = cancelling_graph
    calibration, held_out = image_paths[0:24:2], image_paths[1:24:2]
    plain_notes, notes = {}, {}
    quantize_int8(path, tmp_path / "plain.onnx", spec, calibration, quant_format, "minmax",
                  held_out=held_out, min_cosine=0.999, max_fp32_layers=0, notes=plain_notes)
    kept = quantize_int8(path, tmp_path / "kept.onnx", spec, calibration, quant_format, "minmax",
                         held_out=held_out, min_cosine=0.999, notes=notes)
    conv1, conv2, _conv3 = _convs(path)
    assert plain_notes["fp32_layers"] == [] and plain_notes["held_out_cosine"] < 0.999
    if quant_format == "qdq":
        # conv2 alone suffices: it reads conv1's output in float (feed_fp32_inputs).
        assert [t["fp32_layers"] for t in notes["fp32_layer_tries"]] == [[], [conv2]]
    else:
        # QOperator: conv2 reads conv1's 8-bit output through a DequantizeLinear, so ONNX Runtime's
        # WeightBiasQuantization rounds conv2's float weights per tensor (1000 and 0.3 on one scale):
        # conv1, its producer, has to stay FP32 too.
        assert [t["fp32_layers"] for t in notes["fp32_layer_tries"]] == [[], [conv2], [conv2, conv1]]
        assert notes["fp32_layer_tries"][1]["held_out_cosine"] < 0.999
    assert notes["fp32_layers"] == [t["fp32_layers"] for t in notes["fp32_layer_tries"]][-1]
    assert notes["held_out_cosine"] >= 0.999
    ops = [n.op_type for n in onnx.load(str(kept)).graph.node]
    if quant_format == "qoperator":
        assert ops.count("Conv") == 2 and ops.count("QLinearConv") == 1  # conv3 still INT8
    # What the notes claim is what ONNX Runtime computes on the held-out images.
    x = image_batch(held_out, spec.input_spec)
    exact, int8 = OnnxModel(path)(x), OnnxModel(kept)(x)
    cosine = (exact * int8).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.mean() == pytest.approx(notes["held_out_cosine"], abs=1e-6)
    assert OnnxModel(kept).spec.precision == "int8"


def _relu_then_spread() -> nn.Module:
    """conv2 reads conv1's tiny channel 0 through a weight of 100 and the other channels through
    weights near 0.3: per output channel that rounds well in 8 bits, with one scale for the tensor
    (100 / 127) the small weights round to zero. Its input is a ReLU output, which the quantiser
    folds into the 8-bit range of conv1's output."""
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.001, 0.0, 0.0], [1.0, 0.2, -0.3], [-0.4, 0.8, 0.1], [0.3, -0.5, 0.9]])
                            .view(4, 3, 1, 1))
        net[0].bias.copy_(torch.tensor([0.002, 0.1, -0.2, 0.3]))
        net[2].weight.copy_(torch.tensor([[100.0, 0, 0, 0], [0, 0.3, 0.2, -0.1], [0, -0.2, 0.1, 0.3],
                                          [0, 0.1, -0.3, 0.2]]).view(4, 4, 1, 1))
        net[2].bias.zero_()
    return net.eval()


def test_a_layer_kept_fp32_runs_in_fp32_with_its_producers_activation(image_paths, tmp_path):
    """A kept Conv fed by a DequantizeLinear would get its weights rounded per tensor by ONNX Runtime
    (WeightBiasQuantization, a default optimisation); fed the float input it stays FP32. The ReLU that
    the quantiser folded into the 8-bit range comes back in front of it."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from bpm.export.quantize import feed_fp32_inputs

    spec = OnnxSpec("toy", SIZE)
    source, prepared = tmp_path / "net.onnx", tmp_path / "prepared.onnx"
    export_onnx(_relu_then_spread(), source, spec)
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    conv1, conv2 = _convs(prepared)
    quantized = tmp_path / "int8.onnx"
    quantize_static(str(prepared), str(quantized), ImageCalibrationReader(image_paths[:12], spec),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=[conv2])
    proto = onnx.load(str(quantized))
    assert "Relu" not in [n.op_type for n in proto.graph.node]  # folded into conv1's 8-bit output range
    x = image_batch(image_paths[12:24], spec.input_spec)
    exact = OnnxModel(prepared)(x)

    def worst_error(model_proto) -> float:
        path = tmp_path / "check.onnx"
        onnx.save(model_proto, str(path))
        return float(np.abs(OnnxModel(path)(x) - exact).max() / np.abs(exact).max())

    assert worst_error(proto) > 0.3  # conv2's small weights rounded away with one scale for the tensor
    feed_fp32_inputs(proto.graph, [conv2], onnx.load(str(prepared)).graph)
    nodes = {n.name: n for n in proto.graph.node}
    producers = {o: n for n in proto.graph.node for o in n.output}
    assert producers[nodes[conv2].input[0]].op_type == "Relu"
    assert producers[producers[nodes[conv2].input[0]].input[0]].name == conv1
    assert worst_error(proto) < 0.03  # what is left: conv1's 8-bit input and weights, the 8-bit output
    onnx.checker.check_model(proto)


def test_distance_error_by_hand():
    exact = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 10, 5: mean 20/3, spread 20/9
    moved = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 9.0]])  # distances 5, sqrt(117), sqrt(34)
    expected = ((np.sqrt(117) - 10) + (np.sqrt(34) - 5)) / 3 / (20 / 9)
    assert distance_error(exact, moved, normalize=False) == pytest.approx(expected)
    assert distance_error(exact, exact, normalize=False) == 0.0
    # Scaling every row changes Euclidean distances, not those of L2-normalised rows.
    rows = np.random.default_rng(0).normal(size=(6, 4))
    assert distance_error(rows, 2 * rows, normalize=True) == pytest.approx(0.0, abs=1e-12)
    assert distance_error(rows, 2 * rows, normalize=False) > 1.0


def test_distance_error_against_brute_force():
    rng = np.random.default_rng(1)
    exact, approx = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    d = np.array([np.linalg.norm(exact[i] - exact[j]) for i, j in pairs])
    e = np.array([np.linalg.norm(approx[i] - approx[j]) for i, j in pairs])
    assert distance_error(exact, approx, normalize=False) == pytest.approx(np.abs(e - d).mean() / np.abs(d - d.mean()).mean())


class _Offset(nn.Module):
    """Every feature is 50 plus a small image-dependent part: the INT8 output agrees with FP32 at a
    cosine near 1 while its 8-bit steps (~0.2) bury the differences between images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        with torch.no_grad():
            self.conv.weight.copy_(0.01 * torch.tensor([[1.0, -0.5, 0.2], [0.3, 1.0, -0.4], [-0.6, 0.2, 1.0],
                                                        [0.5, 0.5, 0.5]]).view(4, 3, 1, 1))
            self.conv.bias.fill_(50.0)

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)


def test_distances_that_move_ask_for_fp32_layers_even_when_the_cosine_passes(image_paths, tmp_path):
    spec = OnnxSpec("toy", SIZE)
    path = tmp_path / "offset.onnx"
    export_onnx(_Offset().eval(), path, spec)
    notes = {}
    quantize_int8(path, tmp_path / "int8.onnx", spec, image_paths[0:24:2], "qdq", "minmax",
                  held_out=image_paths[1:24:2], min_cosine=0.99, notes=notes)
    first, *later = notes["fp32_layer_tries"]
    assert first["held_out_cosine"] > 0.9999 and first["held_out_distance_error"] > MAX_DISTANCE_ERROR
    assert later  # the cosine alone would have stopped here


def test_without_held_out_images_nothing_is_tried(cancelling_graph, image_paths, tmp_path):
    path, spec = cancelling_graph
    notes = {}
    quantize_int8(path, tmp_path / "int8.onnx", spec, image_paths[:8], "qoperator", "minmax", notes=notes)
    assert notes == {"weight_bits": 8}  # no tries, no FP32 layers
    assert "Conv" not in [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]


def test_held_out_images_are_the_calibration_pool_minus_calibration():
    pool = [f"img{i:03d}.jpg" for i in range(100)]
    sets = ImageSets(pool[::10], [], "test", training=pool)
    held_out = sets.held_out(count=20)
    assert len(held_out) == 20 and not set(held_out) & set(sets.calibration) and set(held_out) <= set(pool)
    assert held_out == sets.held_out(count=20) and held_out[0] == "img001.jpg" and held_out[-1] == "img099.jpg"
    assert sets.held_out(count=500) == [p for p in pool if p not in set(pool[::10])]
    assert ImageSets(pool[:5], [], "no pool").held_out() == []
