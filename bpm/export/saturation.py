"""What an AVX2-only CPU computes for an INT8 QDQ graph: ONNX Runtime's VPMADDUBSW pair saturation, emulated.

Why this exists: ONNX Runtime (MLAS) multiplies uint8 activations by int8 weights (QLinearConv, QGemm)
with VPDPBUSD on CPUs with AVX-512 VNNI or AVX-VNNI: exact int32 accumulation. On AVX2-only CPUs (and
AVX-512 without VNNI) it uses VPMADDUBSW: raw uint8 activations (zero point not subtracted) times int8
weights, ADJACENT PAIRS along the reduction dimension K added in int16 WITH SATURATION to
[-32768, 32767], then widened and summed exactly in int32; zero-point corrections are computed apart,
exactly. So both CPUs compute the same integers unless a pair sum leaves int16. This module finds those
pair sums on real inputs, so that the INT8 accuracy of an AVX2-only CPU can be argued on a VNNI machine.

K order (MLAS packing): convolutions run channels-last; K runs over (kernel_h, kernel_w, in_channel)
with the channel fastest and pairs are (2j, 2j + 1), an odd K's last element pairing with a zero.
Padding pixels hold the input zero point. Depthwise convolutions use kernels without VPMADDUBSW (exact)
and are not listed; neither are other grouped convolutions or int8 activations (not in bpm's exports).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT16_MIN, INT16_MAX = -32768, 32767
_CHUNK_ELEMENTS = 1 << 22  # pair sums evaluated at once (int32: 16 MiB per temporary)


def _even_k(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` [M, K], ``b`` [K, N] with K padded to even by a zero, as MLAS pads K."""
    if a.shape[1] % 2 == 0:
        return a, b
    return np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in int64, computed by float64 BLAS: every product and partial sum is an integer of
    magnitude below K * 255 * 128, far under 2**53, so the float64 result is exact (and fast)."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def _saturable_pairs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair j, column n) of every weight pair (b[2j, n], b[2j+1, n]) whose sum can leave int16 for some
    uint8 input, ordered by n. A pair sum lies in 255 * [its negative weights, its positive weights],
    so only pairs of two large same-sign weights can saturate: the rest need not be evaluated."""
    w0, w1 = b[0::2].astype(np.int32), b[1::2].astype(np.int32)
    high = 255 * (np.maximum(w0, 0) + np.maximum(w1, 0))
    low = 255 * (np.minimum(w0, 0) + np.minimum(w1, 0))
    n, j = np.nonzero(((high > INT16_MAX) | (low < INT16_MIN)).T)
    return j, n


def _pair_correction(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """(saturating minus exact accumulators [M, N] int64, number of saturated pair sums) for ``a`` [M, K]
    uint8 and ``b`` [K, N] int8, K even. Evaluates the saturable pairs only, in chunks of rows."""
    j, n = _saturable_pairs(b)
    correction = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    if len(j) == 0:
        return correction, 0
    columns, starts = np.unique(n, return_index=True)
    w0, w1 = b[2 * j, n].astype(np.int32), b[2 * j + 1, n].astype(np.int32)
    step = max(1, _CHUNK_ELEMENTS // len(j))
    saturated = 0
    for start in range(0, a.shape[0], step):
        rows = a[start:start + step]
        pair = rows[:, 2 * j].astype(np.int32) * w0 + rows[:, 2 * j + 1].astype(np.int32) * w1
        delta = np.clip(pair, INT16_MIN, INT16_MAX) - pair
        saturated += int(np.count_nonzero(delta))
        correction[start:start + step, columns] = np.add.reduceat(delta, starts, axis=1, dtype=np.int64)
    return correction, saturated


def saturating_pair_matmul(a_u8: np.ndarray, b_s8: np.ndarray) -> tuple[np.ndarray, int]:
    """The int32 [M, N] accumulators VPMADDUBSW produces for ``a_u8`` [M, K] uint8 times ``b_s8`` [K, N]
    int8 (pairs (2j, 2j + 1) along K summed in int16 with saturation, then summed in int32), and the
    number of pair sums that saturated. Without saturation this is exactly ``a @ b``."""
    a, b = np.asarray(a_u8), np.asarray(b_s8)
    if a.dtype != np.uint8 or b.dtype != np.int8 or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"expected uint8 [M, K] and int8 [K, N], got {a.dtype} {a.shape} and {b.dtype} {b.shape}")
    a, b = _even_k(a, b)
    correction, saturated = _pair_correction(a, b)
    return (_exact_matmul(a, b) + correction).astype(np.int32), saturated


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    """A group-1 Conv or a Gemm of a QDQ graph that ORT runs as u8 x s8 integer arithmetic.

    ``weights`` is the int8 [K, N] matrix in MLAS's K order; a Gemm is a 1x1 convolution of [B, K, 1, 1].
    """

    name: str
    activations: str  # the uint8 tensor (a QuantizeLinear output) the input DequantizeLinear reads
    output: str  # the node's float output
    zero_point: int
    scale: float
    weights: np.ndarray
    weight_scale: np.ndarray  # float64 [N]
    bias: np.ndarray  # float64 [N]
    gemm: bool
    kernel: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    strides: tuple[int, int]
    dilations: tuple[int, int]


def quantized_layers(model: onnx.ModelProto) -> list[QuantizedLayer]:
    """The group-1 Conv and Gemm nodes of ``model`` fed by DequantizeLinear of uint8 activations and of
    int8 symmetric weights stored as initializers (ORT's QDQ format), in graph order."""
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}

    def constant(name: str) -> np.ndarray:
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear":
            zero = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else 0
            return (inits[node.input[0]].astype(np.float64) - zero) * inits[node.input[1]]
        return inits[name].astype(np.float64)

    layers = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type not in ("Conv", "Gemm") or attrs.get("group", 1) != 1:
            continue
        x_dq, w_dq = producers.get(node.input[0]), producers.get(node.input[1])
        if (x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear"
                or x_dq.input[0] in inits or len(x_dq.input) < 3 or w_dq.input[0] not in inits):
            continue
        w = inits[w_dq.input[0]]
        if inits[x_dq.input[2]].dtype != np.uint8 or w.dtype != np.int8:
            continue
        if len(w_dq.input) > 2 and w_dq.input[2] and np.any(inits[w_dq.input[2]] != 0):
            raise ValueError(f"{node.name}: int8 weights with a non-zero zero point (not ORT's symmetric QDQ)")
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise ValueError(f"{node.name}: Gemm with transA, alpha or beta is not supported")
            b = w.T if attrs.get("transB", 0) else w
            kernel, pads, strides, dilations = (1, 1), (0, 0, 0, 0), (1, 1), (1, 1)
        else:
            if w.ndim != 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
                raise ValueError(f"{node.name}: only 2-D convolutions with explicit pads are supported")
            b = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])  # [O, C, kh, kw] -> [(kh, kw, C), O]
            kernel = (w.shape[2], w.shape[3])
            pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
            strides, dilations = tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("dilations", (1, 1)))
        n = b.shape[1]
        has_bias = len(node.input) > 2 and node.input[2]
        layers.append(QuantizedLayer(
            name=node.name, activations=x_dq.input[0], output=node.output[0],
            zero_point=int(inits[x_dq.input[2]].item()), scale=float(inits[x_dq.input[1]].item()),
            weights=np.ascontiguousarray(b),
            weight_scale=np.broadcast_to(inits[w_dq.input[1]].astype(np.float64), (n,)).copy(),
            bias=constant(node.input[2]).reshape(n) if has_bias else np.zeros(n),
            gemm=node.op_type == "Gemm", kernel=kernel, pads=pads, strides=strides, dilations=dilations))
    return layers


def _patches(x: np.ndarray, layer: QuantizedLayer, index: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """im2col rows [len(index), K] uint8 of the output positions ``index`` (flat over (batch, out_h, out_w))
    of ``x`` [B, C, H, W] (a Gemm's [B, K]), in MLAS's K order, padded with the input zero point."""
    if layer.gemm:
        return x[index]
    top, left, bottom, right = layer.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=layer.zero_point)
    padded = padded.transpose(0, 2, 3, 1)  # NHWC
    n, oy, ox = np.unravel_index(index, (x.shape[0], *out_hw))
    iy = oy[:, None] * layer.strides[0] + np.arange(layer.kernel[0]) * layer.dilations[0]
    ix = ox[:, None] * layer.strides[1] + np.arange(layer.kernel[1]) * layer.dilations[1]
    return padded[n[:, None, None], iy[:, :, None], ix[:, None, :]].reshape(len(index), -1)


@dataclass
class LayerSaturation:
    """Pair-saturation statistics of one layer over the sampled output positions.

    ``relative_error``: ||saturating - exact|| / ||exact|| of the accumulators sum((a - zero point) * w),
    the integers the layer's output is a rescaling of. ``check_error``: max |exact accumulators rescaled
    (+ bias) - ORT's float Conv/Gemm of the dequantised tensors| / max |the latter|; float rounding only
    (~1e-6) when the im2col, K order and weights read here are right.
    """

    name: str
    k: int
    pairs: int = 0
    saturated: int = 0
    error_sq: float = 0.0
    exact_sq: float = 0.0
    check_diff: float = 0.0
    check_scale: float = 0.0

    @property
    def fraction(self) -> float:
        return self.saturated / self.pairs if self.pairs else 0.0

    @property
    def relative_error(self) -> float:
        return float(np.sqrt(self.error_sq / self.exact_sq)) if self.exact_sq else 0.0

    @property
    def check_error(self) -> float:
        return self.check_diff / self.check_scale if self.check_scale else 0.0

    def add(self, layer: QuantizedLayer, rows: np.ndarray, output: np.ndarray) -> None:
        """Count the pair sums of ``rows`` (im2col, uint8) against ``output`` (ORT's float outputs there)."""
        a, b = _even_k(rows, layer.weights)
        exact = _exact_matmul(a, b) - layer.zero_point * b.sum(axis=0, dtype=np.int64)
        correction, saturated = _pair_correction(a, b)
        self.pairs += a.shape[0] * (a.shape[1] // 2) * b.shape[1]
        self.saturated += saturated
        self.error_sq += float(np.square(correction, dtype=np.float64).sum())
        self.exact_sq += float(np.square(exact, dtype=np.float64).sum())
        rescaled = exact * (layer.scale * layer.weight_scale) + layer.bias
        self.check_diff = max(self.check_diff, float(np.abs(rescaled - output).max(initial=0.0)))
        self.check_scale = max(self.check_scale, float(np.abs(output).max(initial=0.0)))


def unfused_session(model: onnx.ModelProto):
    """An ORT CPU session without graph optimisations: Q/DQ stay separate (no QLinearConv fusion), so every
    QuantizeLinear output exists and each Conv runs in float on dequantised integers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: list[str], types: list[int]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the tensors ``names`` (ONNX element ``types``)."""
    model = copy.deepcopy(model)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(name, elem, None)
                              for name, elem in zip(names, types) if name not in present)
    return model


def saturation_report(model_path: str | Path, images: np.ndarray, max_rows: int = 20000, batch_size: int = 32,
                      seed: int = 0) -> list[LayerSaturation]:
    """Per quantised group-1 Conv/Gemm of the QDQ graph ``model_path``: how many VPMADDUBSW pair sums
    saturate on ``images`` (float32 [N, 3, H, W], preprocessed as the model expects), over at most
    ``max_rows`` output positions per layer sampled uniformly (fixed ``seed``). The uint8 inputs and
    float outputs of each layer come from one unfused ORT run per batch."""
    model = onnx.load(str(model_path))
    layers = quantized_layers(model)
    names = list(dict.fromkeys([layer.activations for layer in layers] + [layer.output for layer in layers]))
    uint8 = {layer.activations for layer in layers}
    types = [TensorProto.UINT8 if name in uint8 else TensorProto.FLOAT for name in names]
    session = unfused_session(with_outputs(model, names, types))
    input_name = session.get_inputs()[0].name
    stats = [LayerSaturation(layer.name, layer.weights.shape[0]) for layer in layers]
    rng = np.random.default_rng(seed)
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        quota = -(-max_rows * len(batch) // len(images))
        values = dict(zip(names, session.run(names, {input_name: batch})))
        for layer, stat in zip(layers, stats):
            y = values[layer.output]
            out_hw = (1, 1) if layer.gemm else y.shape[2:]
            y = y.reshape(len(y), y.shape[1], -1).transpose(0, 2, 1).reshape(-1, y.shape[1])  # rows (b, oy, ox)
            index = np.sort(rng.choice(len(y), size=min(quota, len(y)), replace=False))
            stat.add(layer, _patches(values[layer.activations], layer, index, out_hw), y[index])
    return stats


def emulate_avx2(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the QDQ graph ``model`` whose group-1 Conv/Gemm outputs carry the pair saturation of an
    AVX2-only CPU, to run with :func:`unfused_session` and compare with the unfused original.

    For each layer, every saturable weight pair becomes a channel of an extra Conv/Gemm over the raw
    uint8 input (zero-point padded, as ORT pads): its exact pair sum, clipped to int16, minus itself
    is that pair's accumulator error; a 1x1 Conv/Gemm scales these by input scale x weight scale into
    the layer's output channels and an Add puts them onto its float output. The pair sums are integers
    below 2**17, exact in float32, so only saturation (and the final scaling's rounding) separates the
    two graphs.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    nodes = {node.output[0]: node for node in graph.node if node.output}
    extra: dict[str, list[onnx.NodeProto]] = {}
    for layer in quantized_layers(model):
        a_width = layer.weights.shape[0]
        b = np.pad(layer.weights, ((0, a_width % 2), (0, 0)))
        j, n = _saturable_pairs(b)
        if len(j) == 0:
            continue
        channels = len(layer.weights) // (layer.kernel[0] * layer.kernel[1])
        pair_weights = np.zeros((len(j), channels, *layer.kernel), np.float32)
        for k in (2 * j, 2 * j + 1):
            inside = k < a_width  # an odd K's padding element has no weight
            ky, kx, c = np.unravel_index(k[inside], (*layer.kernel, channels))
            pair_weights[np.flatnonzero(inside), c, ky, kx] = b[k[inside], n[inside]]
        pair_bias = (layer.zero_point * (b[2 * j, n].astype(np.int32) + b[2 * j + 1, n])).astype(np.float32)
        scatter = np.zeros((b.shape[1], len(j), 1, 1), np.float32)
        scatter[n, np.arange(len(j)), 0, 0] = layer.scale * layer.weight_scale[n]
        p = f"{layer.name}/avx2/"
        if layer.gemm:
            op, attrs = "Gemm", {"transB": 1}
            pair_weights, scatter = pair_weights.reshape(len(j), -1), scatter.reshape(b.shape[1], -1)
        else:
            op = "Conv"
            attrs = {"kernel_shape": list(layer.kernel), "pads": list(layer.pads), "strides": list(layer.strides),
                     "dilations": list(layer.dilations)}
        graph.initializer.extend([
            numpy_helper.from_array(np.array(layer.zero_point, np.float32), p + "zero_point"),
            numpy_helper.from_array(pair_weights, p + "pair_weights"),
            numpy_helper.from_array(pair_bias, p + "pair_bias"),
            numpy_helper.from_array(np.array(INT16_MIN, np.float32), p + "int16_min"),
            numpy_helper.from_array(np.array(INT16_MAX, np.float32), p + "int16_max"),
            numpy_helper.from_array(scatter, p + "scatter"),
        ])
        exact = layer.output + "/exact"
        nodes[layer.output].output[0] = exact
        extra[exact] = [  # keyed by the layer node's new output
            helper.make_node("Cast", [layer.activations], [p + "a"], to=TensorProto.FLOAT),
            # pairs of (a - zero point), zero-padded, plus zero point x (w0 + w1): raw pairs, zero-point padded
            helper.make_node("Sub", [p + "a", p + "zero_point"], [p + "shifted"]),
            helper.make_node(op, [p + "shifted", p + "pair_weights", p + "pair_bias"], [p + "pairs"], **attrs),
            helper.make_node("Clip", [p + "pairs", p + "int16_min", p + "int16_max"], [p + "clipped"]),
            helper.make_node("Sub", [p + "clipped", p + "pairs"], [p + "delta"]),
            helper.make_node(op, [p + "delta", p + "scatter"], [p + "error"], **({"transB": 1} if layer.gemm else {})),
            helper.make_node("Add", [exact, p + "error"], [layer.output]),
        ]
    ordered = []
    for node in graph.node:
        ordered += [node, *extra.get(node.output[0] if node.output else "", [])]
    del graph.node[:]
    graph.node.extend(ordered)
    return model
