"""INT8 static quantisation with ONNX Runtime's quantiser, calibrated on real images.

Weights are quantised per output channel (essential for MobileNet-V2's depthwise convolutions,
whose channel ranges differ by orders of magnitude); activations get one scale per tensor from
the calibration images. The calibration set is always named in the export report: quantising on
noise would give plausible-looking but wrong activation ranges.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from bpm.data.images import ImageLike
from bpm.data.transforms import image_batch
from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, write_metadata
from bpm.export.verify import cosine_rows
from bpm.models.onnx_graph import session_options

QUANT_FORMATS = ("qdq", "qoperator")
CALIBRATION_METHODS = ("mse", "minmax", "percentile", "entropy")
#: Activations whose range ``mse`` calibration chooses: what a quantised node writes (Conv outputs
#: that feed a Clip/Relu are not: ONNX Runtime fuses the activation and uses the activation's range).
_RANGED_OPS = ("Clip", "Relu", "Add", "GlobalAveragePool", "Conv", "MaxPool")
_ACTIVATIONS = ("Clip", "Relu")
#: Most layers an INT8 export leaves in FP32 to pass its check (each costs speed).
MAX_FP32_LAYERS = 6
#: Largest :func:`distance_error` the held-out images may show before layers are kept FP32. On the
#: CUHK03 models the INT8 files that kept their mAP measured 0.14-0.18; the triplet-only (``original``)
#: MobileNet-V2 measured 0.30 at cosine 0.997 and lost 3.7 mAP points.
MAX_DISTANCE_ERROR = 0.2


class ImageCalibrationReader:
    """Feeds calibration images to the quantiser in batches, exactly as inference will see them."""

    def __init__(self, images: Sequence[ImageLike], spec: OnnxSpec, batch_size: int = 16) -> None:
        self.images = list(images)
        self.spec = spec
        self.batch_size = batch_size
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.images):
            return None
        chunk = self.images[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {self.spec.input_name: image_batch(chunk, self.spec.input_spec)}

    def rewind(self) -> None:
        self.position = 0


def quantization_error(values: np.ndarray, low: float, high: float, levels: int = 256) -> float:
    """Mean squared error of asymmetric ``levels``-step quantisation of ``values`` over ``[low, high]``."""
    low, high = min(low, 0.0), max(high, 0.0)
    step = (high - low) / (levels - 1) or 1e-12
    zero = np.round(-low / step)
    restored = (np.clip(np.round(values / step) + zero, 0, levels - 1) - zero) * step
    return float(np.mean((values - restored) ** 2))


def mse_range(values: np.ndarray, low: float, high: float, candidates: int = 33) -> tuple[float, float]:
    """The clipping range (a fraction of ``[low, high]``) with the least quantisation error on ``values``.

    MinMax spends the 256 levels on the rare extremes; shrinking the range trades a little clipping
    of outliers for finer steps where the values are.
    """
    best = min((quantization_error(values, low * f, high * f), f) for f in np.linspace(0.2, 1.0, candidates))
    return low * best[1], high * best[1]


def _ranged_tensors(graph) -> list[str]:
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    outputs = {o.name for o in graph.output}
    return [name for node in graph.node if node.op_type in _RANGED_OPS for name in node.output
            if name not in outputs and not (node.op_type == "Conv"
                                            and any(op in _ACTIVATIONS for op in consumers.get(name, [])))]


def mse_ranges(model_path: str | Path, reader: "ImageCalibrationReader", samples_per_batch: int = 20000,
               seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per activation tensor of the FP32 graph: the least-error range over the calibration images."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model_path))
    names = _ranged_tensors(proto.graph)
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
    low = dict.fromkeys(names, np.inf)
    high = dict.fromkeys(names, -np.inf)
    reader.rewind()
    while (batch := reader.get_next()) is not None:
        for name, value in zip(names, session.run(names, batch)):
            flat = value.ravel()
            low[name], high[name] = min(low[name], float(flat.min())), max(high[name], float(flat.max()))
            samples[name].append(rng.choice(flat, min(flat.size, samples_per_batch), replace=False))
    reader.rewind()
    return {name: mse_range(np.concatenate(samples[name]), low[name], high[name]) for name in names}


def rounded_weights(weight: np.ndarray) -> np.ndarray:
    """``weight`` through symmetric 8-bit rounding per output channel, as ONNX Runtime's quantiser
    stores it (scale = largest magnitude / 127)."""
    peak = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1).reshape(-1, *[1] * (weight.ndim - 1))
    step = np.maximum(peak, 1e-30) / 127.0
    return (np.clip(np.round(weight / step), -127, 127) * step).astype(weight.dtype)


def weight_sensitivity(model_path: str | Path, reader: "ImageCalibrationReader") -> list[tuple[tuple[str, ...], float]]:
    """Per Conv/Gemm node of the FP32 graph: the mean cosine between the graph's output with only that
    node's weights rounded to 8 bits and the exact output, on the calibration images; worst first.
    Each entry names the node and the activation (Clip/Relu) fused after it, which stays with it.

    A layer can be hurt by weight rounding alone although its activations quantise well: a channel
    whose output is a small difference of large terms (BatchNorm folded over a near-constant
    pre-activation) loses it to rounding steps set by the large terms. On the CUHK03 MobileNet-V2 one
    16 -> 96 expansion did that (one channel's folded weights reach 40: 8-bit steps of 0.32 for an
    output whose spread is 0.6): its weights alone took the cosine to 0.77-0.93.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model_path))
    initializers = {init.name: init for init in proto.graph.initializer}
    batches = _batches(reader)  # decoded once, not once per node
    exact = _outputs(proto, batches)
    rows = []
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        original = initializers[node.input[1]]
        weight = numpy_helper.to_array(original)
        original.CopyFrom(numpy_helper.from_array(rounded_weights(weight), node.input[1]))
        cosine = float(cosine_rows(_outputs(proto, batches), exact).mean())
        original.CopyFrom(numpy_helper.from_array(weight, node.input[1]))
        fused = [user.name for user in proto.graph.node if node.output[0] in user.input and user.op_type in _ACTIVATIONS]
        rows.append(((node.name, *fused), cosine))
    return sorted(rows, key=lambda row: row[1])


def distance_error(exact: np.ndarray, approx: np.ndarray, normalize: bool) -> float:
    """How far ``approx`` [N, D] moves the pairwise distances of ``exact`` [N, D], relative to their spread:
    mean |d_approx - d_exact| over pairs i < j, divided by the mean |d_exact - mean d_exact|.

    Retrieval ranks by distance *differences*. Cosine to the FP32 embedding says nothing about their
    scale: a triplet-trained embedding compared unnormalised (the ``original`` recipe) keeps every
    distance within a few % of the others, and an INT8 error of cosine 0.997 reordered its ranking.
    ``normalize``: compare L2-normalised rows, as retrieval does for models that normalise at test.
    """
    def distances(rows: np.ndarray) -> np.ndarray:
        rows = rows.astype(np.float64)
        if normalize:
            rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        squared = (rows ** 2).sum(1)
        full = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * rows @ rows.T, 0.0))
        return full[np.triu_indices(len(rows), 1)]

    reference = distances(exact)
    spread = np.abs(reference - reference.mean()).mean()
    return float(np.abs(distances(approx) - reference).mean() / max(spread, 1e-12))


def _batches(reader: "ImageCalibrationReader") -> list[dict]:
    """Every input batch of ``reader``, decoded once."""
    reader.rewind()
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch)
    reader.rewind()
    return batches


def _outputs(model, batches: list[dict]) -> np.ndarray:
    """The graph's outputs ``[N, D]`` on ``batches``; ``model`` is a file or an in-memory ModelProto."""
    import onnxruntime as ort

    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, session_options(), providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, batch)[0] for batch in batches])
    return out.reshape(len(out), -1)


class HeldOutCheck:
    """How closely an INT8 graph follows the FP32 graph ``fp32`` on ``held_out`` images (never the
    calibration or fine-tuning images): mean cosine and :func:`distance_error` of the features."""

    def __init__(self, fp32, held_out: Sequence[ImageLike], spec: OnnxSpec) -> None:
        self.batches = _batches(ImageCalibrationReader(held_out, spec))
        self.exact = _outputs(fp32, self.batches)
        self.normalize = spec.input_spec.normalize_features

    def __call__(self, int8) -> dict:
        outputs = _outputs(int8, self.batches)
        return {"held_out_cosine": float(cosine_rows(outputs, self.exact).mean()),
                "held_out_distance_error": distance_error(self.exact, outputs, self.normalize)}


def passes_held_out(agreement: dict, min_cosine: float) -> bool:
    """Whether a :class:`HeldOutCheck` result is close enough to keep no more layers in FP32."""
    return agreement["held_out_cosine"] >= min_cosine and agreement["held_out_distance_error"] <= MAX_DISTANCE_ERROR


def feed_fp32_inputs(graph, kept_fp32: Sequence[str], source) -> None:
    """Feed the nodes left in FP32 their input before its 8-bit round trip (QDQ graphs), in place.

    Not only the more exact choice: ONNX Runtime's default graph optimisations include
    ``WeightBiasQuantization``, which rounds the float weights of any Conv/Gemm whose input comes from
    a per-tensor DequantizeLinear to 8 bits with *one scale for the whole tensor*. A layer kept FP32
    because per-channel rounding already hurt it then fares far worse: on the CUHK03 MobileNet-V2,
    keeping its worst expansion FP32 took the held-out cosine from 0.95 to 0.005. With a float input
    the optimisation leaves the layer alone.

    The quantiser folds a Clip/Relu into the quantisation that follows it (the 8-bit range does the
    clamping), so where ``source`` (the graph before quantisation) had an activation producing the
    input, a copy of it is put back in front of the FP32 layer. Quantise/dequantise pairs and
    initializers nothing reads any more go.
    """
    from onnx import helper

    kept = set(kept_fp32)
    producers = {name: node for node in graph.node for name in node.output}
    activations = {node.output[0]: node for node in source.node if node.op_type in _ACTIVATIONS}
    constants = {init.name: init for init in source.initializer}
    for node in list(graph.node):
        if node.name not in kept or node.op_type not in ("Conv", "Gemm"):
            continue
        dequantize = producers.get(node.input[0])
        quantize = producers.get(dequantize.input[0]) if dequantize is not None else None
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or quantize is None \
                or quantize.op_type != "QuantizeLinear":
            continue
        tensor = quantize.input[0]
        activation = activations.get(tensor)
        if activation is not None and producers[tensor].op_type != activation.op_type:  # folded into the 8-bit range
            present = {init.name for init in graph.initializer} | set(producers)
            graph.initializer.extend(constants[name] for name in activation.input[1:] if name and name not in present)
            restored = helper.make_node(activation.op_type, [tensor, *activation.input[1:]], [f"{tensor}_fp32"],
                                        name=f"{activation.name}_fp32")
            graph.node.insert(list(graph.node).index(node), restored)
            tensor = restored.output[0]
        node.input[0] = tensor
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and not any(name in read for name in node.output)]
        if not unread:
            read = {name for node in graph.node for name in node.input}
            for initializer in [i for i in graph.initializer if i.name not in read]:
                graph.initializer.remove(initializer)
            return
        for node in unread:
            graph.node.remove(node)


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    spec: OnnxSpec,
    calibration_images: Sequence[ImageLike],
    quant_format: str = "qdq",
    method: str = "minmax",
    held_out: Sequence[ImageLike] = (),
    min_cosine: float = 0.0,
    max_fp32_layers: int = MAX_FP32_LAYERS,
    notes: dict | None = None,
    weight_bits: int = 8,
) -> Path:
    """Write an INT8 copy of the FP32 graph ``src`` to ``dst``.

    The graph is first pre-processed (shape inference and ORT's graph optimisations, which fold
    constants and fuse Conv+Clip) so the quantiser sees the graph that will actually run.
    Weights are signed INT8 per channel, activations unsigned INT8 per tensor: the u8 x s8
    product is the fast VNNI/AVX2 path of ORT's CPU kernels.

    With ``held_out`` images (never the calibration images) and ``min_cosine``: should the INT8
    graph's mean cosine to the FP32 graph on them fall below ``min_cosine``, or its
    :func:`distance_error` exceed :data:`MAX_DISTANCE_ERROR`, the layers whose weights alone cost the
    most (:func:`weight_sensitivity`) stay FP32, the worst first, one more at a time up to
    ``max_fp32_layers``, until both hold; the first try that passes is kept, else the best by cosine. In QDQ graphs a kept layer reads
    its input in float (:func:`feed_fp32_inputs`); in QOperator graphs it reads an 8-bit tensor, and
    ONNX Runtime then rounds its weights per tensor, so its producer usually has to follow it.
    ``weight_bits=7`` rounds weights to [-64, 64] (ONNX Runtime's ``reduce_range``): no u8 x s8 pair sum
    can then leave int16, so CPUs without VNNI need not run the slower exact kernels
    (:func:`bpm.models.onnx_graph.cannot_saturate`), at the cost of one bit of weight precision.
    ``notes`` receives what was tried and kept (the export report shows it).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quant_format not in QUANT_FORMATS:
        raise BpmError(f"--quant_format: expected one of {', '.join(QUANT_FORMATS)}, got {quant_format!r}")
    if method not in CALIBRATION_METHODS:
        raise BpmError(f"--calib_method: expected one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if weight_bits not in (7, 8):
        raise BpmError(f"--int8_weight_bits: expected 8 or 7, got {weight_bits}")
    if not calibration_images:
        raise BpmError("INT8 export: no calibration images (give --dataset or --calib_images DIR)")
    methods = {"mse": CalibrationMethod.MinMax, "minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    notes = {} if notes is None else notes
    notes["weight_bits"] = weight_bits
    with tempfile.TemporaryDirectory(prefix="bpm-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        reader = ImageCalibrationReader(calibration_images, spec)
        overrides = {}
        if method == "mse":
            overrides = {name: [{"rmin": np.array(min(lo, 0.0), dtype=np.float32), "rmax": np.array(hi, dtype=np.float32)}]
                         for name, (lo, hi) in mse_ranges(prepared, reader).items()}

        def quantize(kept_fp32: Sequence[str], path: Path) -> Path:
            reader.rewind()
            quantize_static(
                str(prepared), str(path), reader,
                quant_format=formats[quant_format], per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=weight_bits == 7,
                calibrate_method=methods[method], nodes_to_exclude=list(kept_fp32),
                extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False,
                               **({"TensorQuantOverrides": overrides} if overrides else {})},
            )
            if kept_fp32:
                proto = onnx.load(str(path))
                feed_fp32_inputs(proto.graph, kept_fp32, onnx.load(str(prepared)).graph)
                onnx.save(proto, str(path))
            return path

        best = quantize((), Path(tmp) / "int8_0.onnx")
        if held_out and min_cosine > 0:
            judge = HeldOutCheck(prepared, held_out, spec)

            def agreement(path: Path, fp32_layers: list[str]) -> dict:
                return {"fp32_layers": fp32_layers, **judge(path)}

            def passes(attempt: dict) -> bool:
                return passes_held_out(attempt, min_cosine)

            tries = [agreement(best, [])]
            files = [best]
            if not passes(tries[0]) and max_fp32_layers > 0:
                ranking = weight_sensitivity(prepared, reader)[:max_fp32_layers]
                for count in range(1, len(ranking) + 1):
                    layers = [names for names, _ in ranking[:count]]
                    files.append(quantize([name for names in layers for name in names], Path(tmp) / f"int8_{count}.onnx"))
                    tries.append(agreement(files[-1], [names[0] for names in layers]))
                    if passes(tries[-1]):
                        break
            chosen = len(tries) - 1 if passes(tries[-1]) else max(range(len(tries)), key=lambda i: tries[i]["held_out_cosine"])
            best, kept = files[chosen], tries[chosen]
            notes["fp32_layers"] = kept["fp32_layers"]
            notes["held_out_cosine"] = kept["held_out_cosine"]
            notes["held_out_distance_error"] = kept["held_out_distance_error"]
            notes["held_out_images"] = len(held_out)
            notes["fp32_layer_tries"] = tries
        proto = onnx.load(str(best))
    write_metadata(proto, OnnxSpec(**{**spec.__dict__, "precision": "int8"}))
    onnx.save(proto, str(dst))
    return Path(dst)
