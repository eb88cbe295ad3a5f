"""ONNX graphs: ``onnx`` (FP32), ``onnx16`` (FP16 weights, FP32 input/output), ``onnx_int8`` (static INT8).

Each is checked by ``onnx.checker`` and then run by ONNX Runtime, the way
:class:`bpm.FeatureExtractor` runs it; the verdict is stamped into the file's metadata.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from bpm.export.formats import ExportContext, Opened, export_format
from bpm.export.onnx import check_onnx, convert_to_fp16
from bpm.export.int8 import fine_tune_after_failed_check, write_int8
from bpm.export.runtime import onnx_features
from bpm.export.verify import FormatCheck, stamp_verification
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


def _keep_fine_tuned(ctx: ExportContext, path: Path) -> None:
    """Where the INT8 file written at ``path`` is the fine-tuned QDQ graph, keep a copy for the other
    INT8 formats of this export (``ctx.fine_tuned_int8``)."""
    if ctx.notes["int8"].get("int8_path") == "fine-tuned":
        ctx.fine_tuned_int8 = Path(shutil.copyfile(path, ctx.tmp / "onnx_int8_fine_tuned.onnx"))


def retry_onnx_int8(ctx: ExportContext, path: Path, check: FormatCheck) -> bool:
    """Post-training INT8 failed the check: the fine-tuned file next, where the default export may tune."""
    notes = fine_tune_after_failed_check(ctx.model, ctx.reference, ctx.fp32_onnx(), ctx.spec, ctx.images, ctx.opts,
                                         ctx.tmp, path, ctx.log, ctx.notes.get("int8") or {}, check.failures)
    if notes is None:
        return False
    ctx.notes["int8"] = notes
    _keep_fine_tuned(ctx, path)
    return True


@export_format("onnx_int8", "{stem}_int8.onnx", opens=open_onnx, stamp=stamp_verification, retry=retry_onnx_int8,
               needs_calibration=True, help="ONNX static INT8 (ONNX Runtime), calibrated on training images")
def write_onnx_int8(ctx: ExportContext, path: Path) -> None:
    ctx.notes["int8"] = write_int8(ctx.model, ctx.reference, ctx.fp32_onnx(), ctx.spec, ctx.images, ctx.opts,
                                   ctx.tmp, path, ctx.log)
    _keep_fine_tuned(ctx, path)
