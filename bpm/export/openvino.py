"""OpenVINO: our FP32 ONNX graph as an IR (``.xml`` + ``.bin``), its INT8 by NNCF, verified like every format.

Why OpenVINO: on Intel CPUs it is the fastest runtime we measured for these networks. It runs an FP32
IR at the CPU's default inference precision, which is bfloat16 where the CPU has AMX (the CPU form
of mixed precision) and FP32 elsewhere, so the precision a file *runs* at is a property of the
machine: :class:`OpenVinoModel` reads it back from the compiled model (``INFERENCE_PRECISION_HINT``)
and reports it. INT8 is made by NNCF's post-training quantisation, OpenVINO's own tool, which
places quantisers where OpenVINO's CPU kernels expect them. (OpenVINO also reads QDQ ONNX graphs;
it cannot read ONNX Runtime's QOperator INT8 graphs.) The runner is :mod:`bpm.models.openvino_graph`.

The model's input spec rides in the IR's ``rt_info`` under ``bpm`` (the keys of an exported ONNX
file's metadata, without the ``bpm.`` prefix), so :func:`bpm.load_model` and
:class:`bpm.FeatureExtractor` read an IR as they read an ONNX file. ``openvino`` (and ``nncf``
for INT8) are optional: ``pip install 'bpm[openvino]'``; without them every use is a one-line error.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from bpm.data.images import ImageLike
from bpm.data.transforms import image_batch
from bpm.export.quantize import MAX_FP32_LAYERS
from bpm.export.verify import VERIFICATION_DETAIL_KEY, VERIFICATION_KEY
from bpm.models.onnx_graph import OnnxSpec
from bpm.models.openvino_graph import IR_SUFFIX, META_PREFIX, PRECISION_KEY, require


def set_metadata(model, metadata: dict[str, str]) -> None:
    """Write ``bpm.*`` metadata (an :class:`OnnxSpec`'s, verification) into an OpenVINO model's rt_info."""
    for key, value in metadata.items():
        model.set_rt_info(value, ["bpm", key.removeprefix(META_PREFIX)])


def save_ir(model, path: Path) -> Path:
    """``.xml`` + ``.bin``, weights as they are (OpenVINO would otherwise compress FP32 weights to FP16)."""
    openvino = require("openvino", f"writing {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(model, str(path), compress_to_fp16=False)
    return path


def convert_onnx(source: Path, spec: OnnxSpec):
    """Our FP32 ONNX graph as an OpenVINO model carrying ``spec`` in its rt_info."""
    openvino = require("openvino", "--formats openvino")
    model = openvino.convert_model(str(source))
    set_metadata(model, spec.metadata())
    return model


def write_ir(source: Path, path: Path, spec: OnnxSpec, inference_precision: str | None = None) -> Path:
    """The IR of an ONNX graph: FP32, or a QDQ INT8 graph, whose pairs become FakeQuantize. The precision
    its float parts run at is chosen when it is compiled: the CPU's default, or ``inference_precision``
    (``fp32``) pinned in its rt_info."""
    model = convert_onnx(source, spec)
    if inference_precision:
        set_metadata(model, {PRECISION_KEY: inference_precision})
    return save_ir(model, path)


# What quantize_ir tries, in order, until a file agrees with FP32 on held-out images (see there).
OVERFLOW_LADDER = ({"weight_bits": 8, "depthwise_fp32": False, "accuracy_control": False},
                   {"weight_bits": 7, "depthwise_fp32": False, "accuracy_control": False},
                   {"weight_bits": 7, "depthwise_fp32": True, "accuracy_control": False},
                   {"weight_bits": 7, "depthwise_fp32": False, "accuracy_control": True})


def describe_step(step: dict) -> str:
    """A ladder step as the export log and docs name it, e.g. ``7-bit + depthwise FP32``."""
    return f"{step['weight_bits']}-bit" + (" + depthwise FP32" if step["depthwise_fp32"] else "") + (
        f" + accuracy control ({len(step.get('fp32_layers', ()))} layers FP32)" if step["accuracy_control"] else "")


def quantize_ir(source: Path, path: Path, spec: OnnxSpec, calibration: Sequence[ImageLike], *,
                weight_bits: int = 8, depthwise_fp32: bool = False, accuracy_control: bool = False,
                held_out: Sequence[ImageLike] = (), min_cosine: float = 0.0,
                max_distance_error: float = float("inf"), max_fp32_layers: int = MAX_FP32_LAYERS, threads: int = 0) -> dict:
    """INT8 IR by NNCF post-training quantisation (``PERFORMANCE`` preset: symmetric activations and
    weights, per-channel weights, fast bias correction) on ``calibration`` images, one per sample.

    Why more than one try: on x86 CPUs without VNNI, OpenVINO's INT8 kernels, like ONNX Runtime's,
    add pairs of u8 x s8 products in saturating int16 (:mod:`bpm.export.saturation`), and OpenVINO has
    no switch around it. NNCF's default (``OverflowFix.FIRST_LAYER``) rounds only the first layer's
    weights to 7 bits. On an AVX2-only EPYC, a CUHK03 EfficientNet-Lite0 then agreed with FP32 at
    cosine 0.84 on held-out images; 7-bit weights in every convolution (``OverflowFix.ENABLE``, what
    ``weight_bits`` 7 asks for) gave 0.91, and also keeping the depthwise convolutions in FP32 (NNCF's
    overflow fix leaves their weights at 8 bits) 0.99. A CUHK03 MobileNet-V2 on the same CPU scored
    0.06, 0.88 and 0.90 on those steps: its first blocks lose too much at 7 bits. The last step is
    NNCF's own FP32 fallback, ``quantize_with_accuracy_control``, with 7-bit weights: it ranks the
    quantised layers by how much the features' cosine to FP32 on the calibration images gains when
    each is kept in FP32, and reverts them in that order until the cosine is within ``1 - min_cosine``
    of 1, at most ``max_fp32_layers`` times (``--max_fp32_layers``, as for ONNX Runtime's INT8).
    MobileNet-V2 then kept three layers in FP32 and agreed at 0.995 on held-out images.

    With ``held_out`` images (never the calibration images), the file, compiled for this CPU, is
    checked against the FP32 graph after each step of that ladder, and the first that reaches
    ``min_cosine`` and ``max_distance_error`` is kept (else the best-agreeing one). ``weight_bits``,
    ``depthwise_fp32`` and ``accuracy_control`` pick the step to start from (how
    ``bench/infer_speed.py`` times each step's file). Returns what the export report says about it."""
    nncf = require("nncf", "--formats openvino_int8")
    start = {"weight_bits": weight_bits, "depthwise_fp32": depthwise_fp32, "accuracy_control": accuracy_control}
    if start not in OVERFLOW_LADDER:
        raise ValueError(f"{describe_step(start)}: not a step of the INT8 IR ladder, expected one of "
                         + ", ".join(describe_step(s) for s in OVERFLOW_LADDER))
    images = list(calibration)
    dataset = nncf.Dataset(images, lambda item: image_batch([item], spec.input_spec))
    int8_spec = OnnxSpec(**{**spec.__dict__, "precision": "int8"})

    def quantize(step: dict, target: Path) -> dict:
        fix = nncf.OverflowFix.ENABLE if step["weight_bits"] == 7 else nncf.OverflowFix.FIRST_LAYER
        ignored = {"ignored_scope": nncf.IgnoredScope(types=["GroupConvolution"])} if step["depthwise_fp32"] else {}
        advanced = nncf.AdvancedQuantizationParameters(overflow_fix=fix)
        if step["accuracy_control"]:
            max_drop = max(1.0 - min_cosine, 0.0) if min_cosine > 0 else 0.01
            quantized = _quantize_with_accuracy_control(nncf, source, spec, images, dataset, advanced, max_drop,
                                                        max_iterations=max_fp32_layers, threads=threads)
        else:
            quantized = nncf.quantize(convert_onnx(source, spec), dataset, subset_size=len(images),
                                      preset=nncf.QuantizationPreset.PERFORMANCE, advanced_parameters=advanced,
                                      **ignored)
        set_metadata(quantized, int8_spec.metadata())
        save_ir(quantized, target)
        return {**step, "fp32_layers": _fp32_layers(quantized)} if step["accuracy_control"] else dict(step)

    ladder = OVERFLOW_LADDER[OVERFLOW_LADDER.index(start):]
    notes: dict = {"method": f"NNCF {nncf.__version__} post-training quantisation (performance preset)",
                   "calibration_images": len(images)}
    first = quantize(ladder[0], path)
    notes.update(first)
    if not (held_out and min_cosine > 0):
        return notes
    agreement = _held_out_agreement(source, held_out, threads)

    def passes(attempt: dict) -> bool:
        return attempt["held_out_cosine"] >= min_cosine and attempt["held_out_distance_error"] <= max_distance_error

    tries = [{**first, **agreement(path)}]
    for number, step in enumerate(ladder[1:], 1):
        if passes(tries[-1]):
            break
        attempt = path.with_name(f".{path.stem}.try{number}{IR_SUFFIX}")
        tries.append({**quantize(step, attempt), **agreement(attempt), "file": attempt})
    chosen = next((t for t in tries if passes(t)), max(tries, key=lambda t: t["held_out_cosine"]))
    for attempt in tries:
        if "file" in attempt:
            file = attempt.pop("file")
            for suffix in (IR_SUFFIX, ".bin"):
                if attempt is chosen:
                    os.replace(file.with_suffix(suffix), path.with_suffix(suffix))
                else:
                    file.with_suffix(suffix).unlink(missing_ok=True)
    notes.update(chosen, held_out_images=len(held_out), tries=tries)
    if not chosen["accuracy_control"]:
        notes.pop("fp32_layers", None)
    return notes


def _quantize_with_accuracy_control(nncf, source: Path, spec: OnnxSpec, images: list, dataset, advanced,
                                    max_drop: float, max_iterations: int, threads: int):
    """NNCF's FP32 fallback on the 7-bit quantisation. Its metric is the mean cosine of
    the features to the FP32 graph's (ONNX Runtime) on the calibration images, so the held-out images
    stay unseen until the ladder judges the result."""
    import numpy as np

    from bpm.export.verify import cosine_rows
    from bpm.models.onnx_graph import OnnxModel

    batch = image_batch(images, spec.input_spec)
    exact = OnnxModel(source, threads)(batch)

    def mean_cosine(compiled, items) -> tuple[float, list[float]]:
        rows = list(items)
        cosines = cosine_rows(np.asarray(compiled(batch[rows])[0]).reshape(len(rows), -1), exact[rows])
        return float(cosines.mean()), [float(c) for c in cosines]

    return nncf.quantize_with_accuracy_control(
        convert_onnx(source, spec), dataset, nncf.Dataset(list(range(len(images)))), mean_cosine,
        max_drop=max_drop, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(images),
        advanced_quantization_parameters=advanced,
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
            max_num_iterations=max_iterations))


def _fp32_layers(model) -> list[str]:
    """Convolutions and MatMuls of a quantised IR whose weights are not quantised (kept in FP32)."""
    layers = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
            node, quantised = op.input_value(1).get_node(), False
            for _ in range(6):  # weights reach a layer through Convert/Subtract/Multiply/Reshape/FakeQuantize
                if node.get_type_name() == "FakeQuantize" or (
                        node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8")):
                    quantised = True
                    break
                if node.get_input_size() == 0:
                    break
                node = node.input_value(0).get_node()
            if not quantised:
                layers.append(op.get_friendly_name())
    return layers


def _held_out_agreement(source: Path, held_out: Sequence[ImageLike], threads: int):
    """A function IR path -> its mean cosine and distance error against the FP32 ONNX graph on ``held_out``,
    both run through the one extraction path (:func:`bpm.export.runtime.onnx_features`)."""
    from bpm.export.quantize import distance_error
    from bpm.export.runtime import onnx_features
    from bpm.export.verify import cosine_rows
    from bpm.models.onnx_graph import OnnxModel
    from bpm.models.openvino_graph import OpenVinoModel

    exact_runner = OnnxModel(source, threads)
    exact = onnx_features(exact_runner, held_out)
    normalize = exact_runner.spec.input_spec.normalize_features

    def agreement(ir: Path) -> dict:
        approx = onnx_features(OpenVinoModel(ir, threads), held_out)
        return {"held_out_cosine": float(cosine_rows(approx, exact).mean()),
                "held_out_distance_error": distance_error(exact, approx, normalize)}

    return agreement


def stamp_ir(path: Path, status: str, detail: str) -> None:
    """Record in an IR's rt_info whether ``bpm export`` verified it, as ONNX files record it in their metadata.
    Written beside it and moved over it, so the ``.bin`` being read is never the one being written."""
    openvino = require("openvino", f"stamping {path}")
    model = openvino.Core().read_model(str(path))
    set_metadata(model, {VERIFICATION_KEY: status, VERIFICATION_DETAIL_KEY: detail})
    fresh = path.with_name(f".{path.stem}.stamped{IR_SUFFIX}")
    save_ir(model, fresh)
    del model
    for suffix in (IR_SUFFIX, ".bin"):
        os.replace(fresh.with_suffix(suffix), path.with_suffix(suffix))
