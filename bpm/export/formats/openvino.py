"""OpenVINO IRs: ``openvino`` (FP32 weights, run at the CPU's default precision: bf16 where the CPU has
bf16 instructions (AMX, AVX-512 BF16), else FP32; pinned to FP32 when bf16 fails the check) and
``openvino_int8`` (the fine-tuned QDQ graph of ``onnx_int8`` where the export fine-tuned, else NNCF
post-training quantisation on the calibration images).

Checked by compiling them for this CPU and running them as :class:`bpm.FeatureExtractor`'s openvino
backend does; the precision the compiled model computes in is what the check and the report name.
Not in the default ``--formats``: they need ``pip install 'bpm[openvino]'``.
"""
from __future__ import annotations

from pathlib import Path

from bpm.export.formats import ExportContext, Opened, export_format
from bpm.export.int8 import HELD_OUT_COSINE
from bpm.export.openvino import describe_step, quantize_ir, stamp_ir, write_ir
from bpm.export.quantize import MAX_DISTANCE_ERROR
from bpm.export.runtime import onnx_features
from bpm.export.verify import FormatCheck
from bpm.models.onnx_graph import OnnxSpec
from bpm.models.openvino_graph import OpenVinoModel


def _open(ctx: ExportContext, path: Path, notes: dict) -> Opened:
    runner = OpenVinoModel(path, ctx.opts.threads)
    notes["inference_precision"] = runner.inference_precision
    ctx.log(f"  OpenVINO compiled {path.name.replace('.unverified', '')} to compute in {runner.inference_precision}")
    return Opened(runner.precision, lambda paths: onnx_features(runner, paths, ctx.opts.batch_size))


def open_ir(ctx: ExportContext, path: Path) -> Opened:
    """Compiled for this machine's CPU; the report records the precision it runs at (``openvino``)."""
    return _open(ctx, path, ctx.notes.setdefault("openvino", {}))


def open_int8_ir(ctx: ExportContext, path: Path) -> Opened:
    """As :func:`open_ir`; the precision its float parts run at goes to ``openvino.int8``."""
    return _open(ctx, path, ctx.notes.setdefault("openvino", {}).setdefault("int8", {}))


def pin_fp32(ctx: ExportContext, path: Path, check: FormatCheck) -> bool:
    """The IR failed its check at a reduced precision (bf16: the CPU's default where it has bf16
    instructions): write it again pinned to FP32, which every later run then computes in."""
    if check.precision == "fp32":
        return False
    ctx.log(f"  openvino: {check.precision} failed the check ({check.failures[0]}); pinning the IR to fp32")
    write_ir(ctx.fp32_onnx(), path, ctx.spec, inference_precision="fp32")
    return True


@export_format("openvino", "{stem}_fp32.xml", opens=open_ir, companions=(".bin",), stamp=stamp_ir, default=False,
               retry=pin_fp32, help="OpenVINO IR (.xml + .bin), FP32 weights, run in bf16 where the CPU has bf16 "
                                    "instructions (pinned to FP32 if that fails the check), else FP32")
def write_openvino(ctx: ExportContext, path: Path) -> None:
    write_ir(ctx.fp32_onnx(), path, ctx.spec)


def quantize_with_nncf(ctx: ExportContext, path: Path, check: FormatCheck | None = None) -> bool:
    """NNCF's post-training ladder: the route of an export that has no fine-tuned INT8 graph, and the
    next one when the IR read from that graph fails its check."""
    if ctx.notes.get("openvino", {}).get("int8", {}).get("method", "").startswith("NNCF"):
        return False
    if check is not None:
        ctx.log(f"  openvino_int8: the fine-tuned graph failed the check ({check.failures[0]}); "
                "quantising with NNCF instead")
    notes = quantize_ir(ctx.fp32_onnx(), path, ctx.spec, ctx.images.calibration,
                        weight_bits=ctx.opts.int8_weight_bits, held_out=ctx.images.held_out(),
                        min_cosine=HELD_OUT_COSINE, max_distance_error=MAX_DISTANCE_ERROR,
                        max_fp32_layers=ctx.opts.max_fp32_layers, threads=ctx.opts.threads)
    ctx.notes.setdefault("openvino", {})["int8"] = notes
    if len(notes.get("tries", ())) > 1:
        ctx.log("  OpenVINO INT8, held-out cosine on this CPU: " + ", ".join(
            f"{describe_step(t)} {t['held_out_cosine']:.5f}" for t in notes["tries"])
            + f"; kept {describe_step(notes)}")
    return True


@export_format("openvino_int8", "{stem}_int8.xml", opens=open_int8_ir, companions=(".bin",), stamp=stamp_ir,
               default=False, needs_calibration=True, retry=quantize_with_nncf,
               help="OpenVINO IR, INT8: the fine-tuned QDQ graph where onnx_int8 (asked before it) fine-tuned, "
                    "else, or should that fail its check, NNCF post-training quantisation on the calibration "
                    "images (then 7-bit weights, FP32 depthwise layers, NNCF's accuracy control, while "
                    "held-out images disagree)")
def write_openvino_int8(ctx: ExportContext, path: Path) -> None:
    if ctx.fine_tuned_int8 is None:
        quantize_with_nncf(ctx, path)
        return
    # Every layer in 8 bits with the scales fine-tuning learned: faster than NNCF's files that keep
    # layers in FP32. OpenVINO's kernels round differently from ORT's (on a real MobileNet-V2 the two
    # agreed at cosine 0.989, each 0.991 to FP32), so the IR is checked on its own like every file.
    write_ir(ctx.fine_tuned_int8, path, OnnxSpec(**{**ctx.spec.__dict__, "precision": "int8"}))
    ctx.notes.setdefault("openvino", {})["int8"] = {"method": "the fine-tuned QDQ graph of onnx_int8",
                                                    "fp32_layers": []}
    ctx.log("  openvino_int8: read from the fine-tuned INT8 graph (every layer INT8, its learned scales)")
