"""OpenVINO: our FP32 ONNX graph as an IR (``.xml`` + ``.bin``), its INT8 by NNCF, and one runner for both.

Why OpenVINO: on Intel CPUs it is the fastest runtime we measured for these networks. It runs an FP32
IR at the CPU's default inference precision, which is bfloat16 where the CPU has AMX (the CPU form
of mixed precision) and FP32 elsewhere, so the precision a file *runs* at is a property of the
machine: :class:`OpenVinoModel` reads it back from the compiled model (``INFERENCE_PRECISION_HINT``)
and reports it. INT8 is made by NNCF's post-training quantisation, OpenVINO's own tool, which
places quantisers where OpenVINO's CPU kernels expect them. (OpenVINO also reads QDQ ONNX graphs;
it cannot read ONNX Runtime's QOperator INT8 graphs.)

The model's input spec rides in the IR's ``rt_info`` under ``bpm`` (the keys of an exported ONNX
file's metadata, without the ``bpm.`` prefix), so :func:`bpm.load_model` and
:class:`bpm.FeatureExtractor` read an IR as they read an ONNX file. ``openvino`` (and ``nncf``
for INT8) are optional: ``pip install 'bpm[openvino]'``; without them every use is a one-line error.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, spec_from_metadata
from bpm.export.runtime import ImageLike, image_batch
from bpm.export.verify import VERIFICATION_DETAIL_KEY, VERIFICATION_KEY
from bpm.inference import EXTRACTION_BACKENDS, ExtractionBackend

IR_SUFFIX = ".xml"
INSTALL_HINT = "pip install 'bpm[openvino]'"
META_PREFIX = "bpm."
#: OpenVINO element types of INFERENCE_PRECISION_HINT, by our precision names (bpm.export.verify).
PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def require(package: str, what: str):
    """``import package`` (``openvino`` or ``nncf``), or a one-line error saying how to install it."""
    try:
        return __import__(package)
    except ImportError:
        raise BpmError(f"{what} needs the {package} package, which is not installed ({INSTALL_HINT})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def set_metadata(model, metadata: dict[str, str]) -> None:
    """Write ``bpm.*`` metadata (an :class:`OnnxSpec`'s, verification) into an OpenVINO model's rt_info."""
    for key, value in metadata.items():
        model.set_rt_info(value, ["bpm", key.removeprefix(META_PREFIX)])


def read_metadata(model) -> dict[str, str]:
    """The ``bpm.*`` metadata of an OpenVINO model (``{}`` for an IR from elsewhere)."""
    if not model.has_rt_info(["bpm"]):
        return {}
    return {META_PREFIX + key: model.get_rt_info(["bpm", key]).astype(str) for key in model.get_rt_info()["bpm"]}


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


class OpenVinoModel:
    """An IR compiled for the CPU, called like :class:`bpm.export.runtime.OnnxModel` (FP32 arrays in and out).

    Args:
        path: the ``.xml`` (its ``.bin`` beside it).
        threads: inference threads (0: OpenVINO's default).
        inference_precision: ``fp32``/``bf16``/``fp16`` to force one; ``None``: the CPU's default.

    ``inference_precision`` is what the compiled model reports it computes in; ``precision`` is what
    the file is checked as (``int8`` for a quantised IR, else the inference precision). ``spec`` is
    ``None`` for an IR from elsewhere without fixed height and width.
    """

    kind = "OpenVINO IR"

    def __init__(self, path: str | Path, threads: int = 0, inference_precision: str | None = None) -> None:
        openvino = require("openvino", f"{path} (OpenVINO IR)")
        self.path = Path(path)
        if not self.path.is_file():
            raise BpmError(f"{self.path}: OpenVINO IR not found")
        if not self.path.with_suffix(".bin").is_file():
            raise BpmError(f"{self.path}: the IR's weights {self.path.with_suffix('.bin').name} are missing beside it")
        config: dict = {}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if inference_precision:
            wanted = {v: k for k, v in PRECISIONS.items()}.get(inference_precision)
            if wanted is None:
                raise BpmError(f"inference precision {inference_precision!r}: expected one of "
                               f"{', '.join(PRECISIONS.values())}")
            config["INFERENCE_PRECISION_HINT"] = wanted
        try:
            core = openvino.Core()
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError/GeneralFailure variants
            raise BpmError(f"{self.path}: OpenVINO cannot load it ({_first_line(exc)})") from exc
        self.metadata = read_metadata(model)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.inference_precision = PRECISIONS.get(hint, hint)
        self.spec = self._spec(model)
        self.precision = "int8" if self.spec is not None and self.spec.precision == "int8" else self.inference_precision
        self._output = self.compiled.output(0)
        shape = self._output.get_partial_shape()
        self.feature_dim = int(shape[shape.rank.get_length() - 1].get_length())

    def _spec(self, model) -> OnnxSpec | None:
        dims = model.input(0).get_partial_shape()
        fixed = dims.rank.is_static and dims.rank.get_length() == 4 and dims[2].is_static and dims[3].is_static
        if not self.metadata and not fixed:
            return None
        h_w = (dims[2].get_length(), dims[3].get_length()) if fixed else (0, 0)
        return spec_from_metadata(self.metadata, model.input(0).get_any_name(), model.output(0).get_any_name(), h_w)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        output = self.compiled(np.ascontiguousarray(images, dtype=np.float32))[self._output]
        return np.asarray(output, dtype=np.float32).reshape(len(images), -1)


EXTRACTION_BACKENDS.add("openvino", ExtractionBackend(
    "openvino", (IR_SUFFIX,), f"an OpenVINO IR .xml (bpm export --formats openvino; {INSTALL_HINT})", OpenVinoModel),
    module=__name__)
