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
from bpm.export.verify import VERIFICATION_DETAIL_KEY, VERIFICATION_KEY
from bpm.models.onnx_graph import OnnxSpec
from bpm.models.openvino_graph import IR_SUFFIX, META_PREFIX, require


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


def write_ir(source: Path, path: Path, spec: OnnxSpec) -> Path:
    """The FP32 IR of an FP32 ONNX graph (the precision it runs at is chosen when it is compiled)."""
    return save_ir(convert_onnx(source, spec), path)


def quantize_ir(source: Path, path: Path, spec: OnnxSpec, calibration: Sequence[ImageLike], *,
                weight_bits: int = 8, held_out: Sequence[ImageLike] = (), min_cosine: float = 0.0,
                max_distance_error: float = float("inf"), threads: int = 0) -> dict:
    """INT8 IR by NNCF post-training quantisation (``PERFORMANCE`` preset: symmetric activations and
    weights, per-channel weights, fast bias correction) on ``calibration`` images, one per sample.

    Why more than one try: on x86 CPUs without VNNI, OpenVINO's INT8 kernels, like ONNX Runtime's,
    add pairs of u8 x s8 products in saturating int16 (:mod:`bpm.export.saturation`), and OpenVINO has
    no switch around it. NNCF's default (``OverflowFix.FIRST_LAYER``) rounds only the first layer's
    weights to 7 bits. On an AVX2-only EPYC, a CUHK03 EfficientNet-Lite0 then agreed with FP32 at
    cosine 0.84 on held-out images; 7-bit weights in every convolution (``OverflowFix.ENABLE``, what
    ``weight_bits`` 7 asks for) gave 0.91, and also keeping the depthwise convolutions in FP32 (NNCF's
    overflow fix leaves their weights at 8 bits) 0.99. With ``held_out`` images (never the calibration
    images), the file, compiled for this CPU, is checked against the FP32 graph after each step of
    that ladder, and the first that reaches ``min_cosine`` and ``max_distance_error`` is kept (else
    the best-agreeing one). Returns what the export report says about it."""
    nncf = require("nncf", "--formats openvino_int8")
    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits: expected 8 or 7, got {weight_bits}")
    images = list(calibration)
    dataset = nncf.Dataset(images, lambda item: image_batch([item], spec.input_spec))
    int8_spec = OnnxSpec(**{**spec.__dict__, "precision": "int8"})

    def quantize(step: dict, target: Path) -> Path:
        fix = nncf.OverflowFix.ENABLE if step["weight_bits"] == 7 else nncf.OverflowFix.FIRST_LAYER
        ignored = {"ignored_scope": nncf.IgnoredScope(types=["GroupConvolution"])} if step["depthwise_fp32"] else {}
        quantized = nncf.quantize(convert_onnx(source, spec), dataset, subset_size=len(images),
                                  preset=nncf.QuantizationPreset.PERFORMANCE,
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix), **ignored)
        set_metadata(quantized, int8_spec.metadata())
        return save_ir(quantized, target)

    ladder = [{"weight_bits": 8, "depthwise_fp32": False}] if weight_bits == 8 else []
    ladder += [{"weight_bits": 7, "depthwise_fp32": False}, {"weight_bits": 7, "depthwise_fp32": True}]
    notes: dict = {"method": f"NNCF {nncf.__version__} post-training quantisation (performance preset)",
                   "calibration_images": len(images), **ladder[0]}
    quantize(ladder[0], path)
    if not (held_out and min_cosine > 0):
        return notes
    agreement = _held_out_agreement(source, held_out, threads)

    def passes(attempt: dict) -> bool:
        return attempt["held_out_cosine"] >= min_cosine and attempt["held_out_distance_error"] <= max_distance_error

    tries = [{**ladder[0], **agreement(path)}]
    for number, step in enumerate(ladder[1:], 1):
        if passes(tries[-1]):
            break
        attempt = quantize(step, path.with_name(f".{path.stem}.try{number}{IR_SUFFIX}"))
        tries.append({**step, **agreement(attempt), "file": attempt})
    chosen = next((t for t in tries if passes(t)), max(tries, key=lambda t: t["held_out_cosine"]))
    for attempt in tries:
        if "file" in attempt:
            file = attempt.pop("file")
            for suffix in (IR_SUFFIX, ".bin"):
                if attempt is chosen:
                    os.replace(file.with_suffix(suffix), path.with_suffix(suffix))
                else:
                    file.with_suffix(suffix).unlink(missing_ok=True)
    notes.update(weight_bits=chosen["weight_bits"], depthwise_fp32=chosen["depthwise_fp32"],
                 held_out_cosine=chosen["held_out_cosine"], held_out_distance_error=chosen["held_out_distance_error"],
                 held_out_images=len(held_out), tries=tries)
    return notes


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
