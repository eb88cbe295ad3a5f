"""VPMADDUBSW pair saturation (what ORT's u8 x s8 kernels compute on AVX2-only CPUs), emulated in numpy and
in the graph. Nothing here depends on this CPU's instruction set: the emulation is integer arithmetic,
ORT only runs unfused graphs (float Conv/Gemm of dequantised integers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from bpm.export.saturation import (_patches, emulate_avx2, quantized_layers, saturating_pair_matmul,
                                   saturation_report, unfused_session, with_outputs)


@pytest.mark.parametrize("a, b, expected, saturated", [
    ([[255, 255]], [[127], [127]], 32767, 1),  # 64770 clipped
    ([[255, 255]], [[-128], [-128]], -32768, 1),  # -65280 clipped
    ([[100, 200]], [[50], [-60]], 5000 - 12000, 0),
    ([[255, 255, 255]], [[127], [127], [127]], 32767 + 32385, 1),  # odd K: the last element pairs with a zero
    ([[255, 0, 255]], [[127], [127], [127]], 2 * 32385, 0),  # pairs are (0, 1), (2, pad): no pair is large
    ([[255, 255, 255, 255]], [[127], [-127], [127], [127]], 0 + 32767, 1),
])
def test_hand_checked_pairs(a, b, expected, saturated):
    out, count = saturating_pair_matmul(np.array(a, np.uint8), np.array(b, np.int8))
    assert out.dtype == np.int32 and out.tolist() == [[expected]] and count == saturated


def brute_force(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    out, count = np.zeros((a.shape[0], b.shape[1]), np.int64), 0
    for m in range(a.shape[0]):
        for n in range(b.shape[1]):
            for k in range(0, a.shape[1], 2):
                pair = int(a[m, k]) * int(b[k, n]) + (int(a[m, k + 1]) * int(b[k + 1, n]) if k + 1 < a.shape[1] else 0)
                clipped = min(max(pair, -32768), 32767)
                count += clipped != pair
                out[m, n] += clipped
    return out, count


@pytest.mark.parametrize("m, k, n", [(7, 9, 5), (6, 16, 4), (3, 1, 2), (5, 31, 3)])
def test_matches_brute_force(m, k, n):
    rng = np.random.default_rng(k)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    out, count = saturating_pair_matmul(a, b)
    expected, expected_count = brute_force(a, b)
    assert np.array_equal(out, expected) and count == expected_count
    assert k < 4 or count > 0  # random full-range operands do saturate: the comparison is not vacuous


def test_rejects_other_types():
    with pytest.raises(ValueError, match="uint8"):
        saturating_pair_matmul(np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8))


class TwoConvs(torch.nn.Module):
    """A 1x1 convolution (K = 3, odd), a padded 3x3 convolution (K = 72) and a Gemm (K = 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.pointwise = torch.nn.Conv2d(3, 8, 1)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(self.pointwise(x)))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


def signed_weights(weight: torch.Tensor, pattern: str, rng: np.random.Generator) -> torch.Tensor:
    """|w| in [0.5, 1], signs alternating along MLAS's K order (kh, kw, in_channel) or all positive."""
    shape = weight.shape  # [O, C] or [O, C, kh, kw]
    k_order = np.arange(int(np.prod(shape[1:]))).reshape(*shape[2:], shape[1])  # flat K index of (kh, kw, c)
    k_index = np.moveaxis(k_order, -1, 0) if len(shape) == 4 else k_order  # as [C, kh, kw]
    sign = (-1.0) ** k_index if pattern == "alternating" else np.ones(k_index.shape)
    magnitude = rng.uniform(0.5, 1.0, shape)
    return torch.tensor(magnitude * sign[None], dtype=torch.float32)


def quantized_model(folder: Path, pattern: str, images: np.ndarray, seven_bits: bool = False) -> Path:
    """The net exported and quantised as ``bpm export`` does: QDQ, per-channel s8 weights, u8 activations
    (``seven_bits``: weights in [-64, 64], as ``--int8_weight_bits 7``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    net = TwoConvs().eval()
    if pattern != "random":
        rng = np.random.default_rng(1)
        with torch.no_grad():
            for layer in (net.pointwise, net.conv, net.fc):
                layer.weight.copy_(signed_weights(layer.weight, pattern, rng))
    fp32, int8 = folder / f"{pattern}_fp32.onnx", folder / f"{pattern}_int8{'_7bit' if seven_bits else ''}.onnx"
    torch.onnx.export(net, (torch.from_numpy(images[:1]),), str(fp32), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": images[i:i + 4]} for i in range(0, len(images), 4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=seven_bits)
    return int8


def model_images(pattern: str) -> np.ndarray:
    rng = np.random.default_rng(2)
    if pattern == "random":  # signed inputs: non-zero zero points, so the 3x3 convolution's padding matters
        return rng.normal(0, 1, (16, 3, 12, 8)).astype(np.float32)
    return rng.uniform(0, 1, (16, 3, 12, 8)).astype(np.float32)  # large positive activations


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    folder = tmp_path_factory.mktemp("saturation")
    return {p: (quantized_model(folder, p, model_images(p)), model_images(p))
            for p in ("random", "alternating", "same_sign")}


def run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = unfused_session(model)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


@pytest.mark.parametrize("pattern", ["random", "alternating", "same_sign"])
def test_accumulators_match_ort_float_layers(models, pattern):
    # (c) the exact accumulators, rescaled, are ORT's float Conv/Gemm of the dequantised tensors: the
    # im2col (pads, strides, zero-point padding), the K order of rows and weights and the weights read are right
    path, images = models[pattern]
    report = saturation_report(path, images, max_rows=500, batch_size=6)
    assert [r.k for r in report] == [3, 72, 8]
    assert [layer.gemm for layer in quantized_layers(onnx.load(str(path)))] == [False, False, True]
    for layer in report:
        assert layer.check_scale > 0 and layer.check_error < 1e-5, (layer.name, layer.check_error)
        assert layer.pairs > 0
    if pattern == "random":  # the padded 3x3 convolution's input has a non-zero zero point
        assert quantized_layers(onnx.load(str(path)))[1].zero_point > 0


def test_no_saturation_means_identical_integers(models):
    # (a) signs alternate along MLAS's K order: no pair can leave int16 (in any other K order, e.g. NCHW's
    # (c, kh, kw), the 3x3 convolution's pairs would be same-signed and saturate)
    path, images = models["alternating"]
    report = saturation_report(path, images)
    assert all(layer.saturated == 0 and layer.relative_error == 0.0 for layer in report)
    model = onnx.load(str(path))
    emulated = emulate_avx2(model)
    assert len(emulated.graph.node) == len(model.graph.node)
    assert np.array_equal(run(emulated, images), run(model, images))


def test_engineered_saturation_is_reported_and_emulated(models):
    # (b) large same-sign weights and large activations
    path, images = models["same_sign"]
    report = saturation_report(path, images)
    assert all(layer.saturated > 0 and layer.relative_error > 0 for layer in report)
    model = onnx.load(str(path))
    assert not np.allclose(run(emulate_avx2(model), images), run(model, images), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("pattern", ["random", "same_sign"])  # zero points 130 (random) and 0 (same_sign)
def test_emulated_graph_computes_saturating_accumulators(models, pattern):
    # every layer of the emulated graph outputs its saturating accumulators, rescaled, of its own uint8 input
    path, images = models[pattern]
    layers = quantized_layers(onnx.load(str(path)))
    names = [layer.activations for layer in layers] + [layer.output for layer in layers]
    types = [TensorProto.UINT8] * len(layers) + [TensorProto.FLOAT] * len(layers)
    session = unfused_session(with_outputs(emulate_avx2(onnx.load(str(path))), names, types))
    values = dict(zip(names, session.run(names, {"x": images})))
    total = 0
    for layer in layers:
        y = values[layer.output]
        out_hw = (1, 1) if layer.gemm else y.shape[2:]
        y = y.reshape(len(y), y.shape[1], -1).transpose(0, 2, 1).reshape(-1, y.shape[1])
        rows = _patches(values[layer.activations], layer, np.arange(len(y)), out_hw)
        accumulators, saturated = saturating_pair_matmul(rows, layer.weights)
        offset = layer.zero_point * layer.weights.sum(axis=0, dtype=np.int64)
        expected = (accumulators - offset) * (layer.scale * layer.weight_scale) + layer.bias
        exact = (rows.astype(np.int64) @ layer.weights - offset) * (layer.scale * layer.weight_scale) + layer.bias
        assert np.abs(expected - y).max() < 1e-5 * np.abs(y).max(), layer.name
        assert (saturated > 0) == (np.abs(exact - y).max() > 1e-2 * np.abs(y).max())  # saturation shows
        total += saturated
    assert total > 0


def test_which_cpus_get_the_precise_int8_kernels():
    from bpm.models.onnx_graph import int8_saturates

    assert int8_saturates(["avx2"], "x86_64")  # the AVX2-only AMD EPYC
    assert int8_saturates(["avx2", "avx512f"], "x86_64")  # AVX-512 without VNNI: VPMADDUBSW too
    assert not int8_saturates(["avx2", "avx512f", "avx512_vnni"], "x86_64")
    assert not int8_saturates(["avx2", "avx_vnni"], "AMD64")
    assert not int8_saturates(["asimddp"], "aarch64")
    assert int8_saturates([], "x86_64")  # flags unknown: the exact kernels


def test_precise_sessions_run_int8_weights_as_u8(models, tmp_path):
    """The AVX2 remedy, checked on any x86 CPU: with ``session.x64quantprecision`` ORT converts the s8
    weights to u8 (so its U8U8 kernels, which widen to 16 bits before adding, run instead of VPMADDUBSW),
    and the result is the exact-integer one."""
    import platform

    import onnxruntime as ort

    from bpm.models.onnx_graph import PRECISE_INT8_SETTING, session_options

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("session.x64quantprecision is an x86-64 setting")
    path, images = models["same_sign"]
    weight_types = {}
    for precise in (False, True):
        options = session_options(precise_int8=precise)
        if precise:
            assert options.get_session_config_entry(PRECISE_INT8_SETTING) == "1"
        options.optimized_model_filepath = str(tmp_path / f"optimized_{precise}.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: images})[0]
        optimized = onnx.load(options.optimized_model_filepath)
        initializers = {i.name: i.data_type for i in optimized.graph.initializer}
        convs = [n for n in optimized.graph.node if n.op_type == "QLinearConv"]
        assert convs
        weight_types[precise] = {initializers[n.input[3]] for n in convs}
        if precise:  # without it, this case saturates on AVX2-only CPUs (see the next test)
            assert np.array_equal(out, run(onnx.load(str(path)), images))
    assert weight_types == {False: {onnx.TensorProto.INT8}, True: {onnx.TensorProto.UINT8}}


@pytest.mark.parametrize("pattern", ["random", "same_sign"])
def test_this_cpu_computes_what_the_emulation_says(models, pattern):
    """The emulation against the hardware it models, on whichever CPU runs the tests (the outcome
    depends on the instruction set, by design): ORT's own fused session equals the saturating
    emulation bit for bit where :func:`int8_saturates` says this CPU saturates (checked on an
    AVX2-only AMD EPYC), and the exact integers elsewhere; with ``session.x64quantprecision`` it
    equals the exact integers on every x86 CPU. So the remedy is exact on the CPUs that need it, and
    the emulation's accuracy figures (bench/avx2_saturation.py) are what such a CPU computes."""
    import platform

    import onnxruntime as ort

    from bpm.models.onnx_graph import this_cpu_saturates, session_options

    path, images = models[pattern]
    model = onnx.load(str(path))
    exact, emulated = run(model, images), run(emulate_avx2(model), images)
    assert not np.array_equal(exact, emulated)  # the case saturates: the two expectations differ

    def fused(precise: bool) -> np.ndarray:
        session = ort.InferenceSession(str(path), session_options(precise_int8=precise),
                                       providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0]

    assert np.array_equal(fused(False), emulated if this_cpu_saturates() else exact)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert np.array_equal(fused(True), exact)


def test_seven_bit_weights_compute_the_exact_integers_with_the_fast_kernels(tmp_path):
    """``--int8_weight_bits 7``: the case that saturates most at 8 bits cannot saturate, so every CPU's
    default u8 x s8 session computes the exact integers, and bpm opens such a file without the slower
    ``session.x64quantprecision`` even where 8-bit files need it."""
    import onnxruntime as ort

    from bpm.models import onnx_graph
    from bpm.models.onnx_graph import PRECISE_INT8_SETTING, OnnxModel, cannot_saturate, session_options

    images = model_images("same_sign")
    path = quantized_model(tmp_path, "same_sign", images, seven_bits=True)
    model = onnx.load(str(path))
    assert cannot_saturate(model)
    assert all(layer.saturated == 0 for layer in saturation_report(path, images))
    exact = run(model, images)
    assert np.array_equal(run(emulate_avx2(model), images), exact)
    session = ort.InferenceSession(str(path), session_options(precise_int8=False), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"x": images})[0], exact)

    eight_bits = quantized_model(tmp_path, "same_sign", images)
    assert not cannot_saturate(onnx.load(str(eight_bits)))

    def precise(model: OnnxModel) -> bool:
        try:
            return model.session.get_session_options().get_session_config_entry(PRECISE_INT8_SETTING) == "1"
        except RuntimeError:  # not set
            return False

    with pytest.MonkeyPatch.context() as patch:  # as on an AVX2-only CPU
        patch.setattr(onnx_graph, "this_cpu_saturates", lambda: True)
        assert not precise(OnnxModel(path)) and precise(OnnxModel(eight_bits))
