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


def quantize_ir(source: Path, path: Path, spec: OnnxSpec, calibration: Sequence[ImageLike]) -> dict:
    """INT8 IR by NNCF post-training quantisation (``PERFORMANCE`` preset: symmetric activations and
    weights, per-channel weights, fast bias correction) on ``calibration`` images, one per sample.
    Returns what the export report says about it."""
    nncf = require("nncf", "--formats openvino_int8")
    model = convert_onnx(source, spec)
    images = list(calibration)
    dataset = nncf.Dataset(images, lambda item: image_batch([item], spec.input_spec))
    quantized = nncf.quantize(model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.PERFORMANCE)
    set_metadata(quantized, OnnxSpec(**{**spec.__dict__, "precision": "int8"}).metadata())
    save_ir(quantized, path)
    return {"method": f"NNCF {nncf.__version__} post-training quantisation (performance preset)",
            "calibration_images": len(images)}


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
