"""ONNX graphs: ``onnx`` (FP32), ``onnx16`` (FP16 weights, FP32 input/output), ``onnx_int8`` (static INT8).

Each is checked by ``onnx.checker`` and then run by ONNX Runtime, the way
:class:`bpm.FeatureExtractor` runs it; the verdict is stamped into the file's metadata.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from bpm.export.formats import ExportContext, Opened, export_format
from bpm.export.onnx import check_onnx, convert_to_fp16
from bpm.export.pipeline import _int8_source
from bpm.export.quantize import quantize_int8
from bpm.export.runtime import onnx_features
from bpm.export.verify import COSINE_THRESHOLDS, stamp_verification
from bpm.models.onnx_graph import OnnxModel


def open_onnx(ctx: ExportContext, path: Path) -> Opened:
    """``onnx.checker``, then an ONNX Runtime session; the graph's metadata says its precision."""
    check_onnx(path)
    runner = OnnxModel(path, ctx.opts.threads)
    return Opened(runner.spec.precision, lambda paths: onnx_features(runner, paths, ctx.opts.batch_size))


@export_format("onnx", "{stem}_fp32.onnx", opens=open_onnx, stamp=stamp_verification,
               help="ONNX FP32, dynamic batch, input spec in its metadata")
def write_onnx(ctx: ExportContext, path: Path) -> None:
    shutil.copyfile(ctx.fp32_onnx(), path)


@export_format("onnx16", "{stem}_fp16.onnx", opens=open_onnx, stamp=stamp_verification,
               help="ONNX FP16 weights and activations, FP32 input/output")
def write_onnx16(ctx: ExportContext, path: Path) -> None:
    convert_to_fp16(ctx.fp32_onnx(), path, ctx.spec)


#: What INT8 must reach on held-out training-pool images before no more layers are kept FP32: half
#: the check's allowed error (1 - 0.98), since test images sit further from the calibration images
#: (a distilled MobileNet-V2 at held-out 0.984 measured 0.979 on the verification images).
HELD_OUT_COSINE = 1 - (1 - COSINE_THRESHOLDS["int8"]) / 2


@export_format("onnx_int8", "{stem}_int8.onnx", opens=open_onnx, stamp=stamp_verification,
               needs_calibration=True, help="ONNX static INT8 (ONNX Runtime), calibrated on training images")
def write_onnx_int8(ctx: ExportContext, path: Path) -> None:
    source, ctx.notes["int8"] = _int8_source(ctx.model, ctx.reference, ctx.fp32_onnx(), ctx.spec, ctx.images,
                                             ctx.opts, ctx.tmp, ctx.log)
    quantize_int8(source, path, ctx.spec, ctx.images.calibration, ctx.opts.quant_format, ctx.opts.calib_method,
                  held_out=ctx.images.held_out(), min_cosine=HELD_OUT_COSINE,
                  max_fp32_layers=ctx.opts.max_fp32_layers, notes=ctx.notes["int8"],
                  weight_bits=ctx.opts.int8_weight_bits)
    if ctx.notes["int8"].get("fp32_layers"):
        ctx.log(f"  INT8: {len(ctx.notes['int8']['fp32_layers'])} layer(s) kept in FP32 (their weights alone cost the most "
                f"cosine): {', '.join(ctx.notes['int8']['fp32_layers'])}; held-out cosine "
                f"{ctx.notes['int8']['held_out_cosine']:.5f}, distance error "
                f"{ctx.notes['int8']['held_out_distance_error']:.3f} of the distances' spread")
