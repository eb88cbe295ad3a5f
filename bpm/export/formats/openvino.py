"""OpenVINO IRs: ``openvino`` (FP32 weights, run at the CPU's default precision: bf16 where the CPU has
bf16 instructions (AMX, AVX-512 BF16), else FP32; pinned to FP32 when bf16 fails the check) and
``openvino_int8`` (the fine-tuned QDQ graph of ``onnx_int8`` where the export fine-tuned, else NNCF
post-training quantisation on the calibration images, and where that fails its check, the ladder's
next steps, then a graph fine-tuned for the IR).

Checked by compiling them for this CPU and running them as :class:`bpm.FeatureExtractor`'s openvino
backend does; the precision the compiled model computes in is what the check and the report name.
Not in the default ``--formats``: they need ``pip install 'bpm[openvino]'``.
"""
from __future__ import annotations

from pathlib import Path

from bpm.export.formats import ExportContext, Opened, export_format
from bpm.export.int8 import HELD_OUT_COSINE, fine_tune_after_failed_check
from bpm.export.openvino import OVERFLOW_LADDER, describe_step, quantize_ir, stamp_ir, write_ir
from bpm.export.quantize import MAX_DISTANCE_ERROR
from bpm.export.runtime import onnx_features
from bpm.export.verify import FormatCheck
from bpm.models.onnx_graph import OnnxSpec
from bpm.models.openvino_graph import OpenVinoModel

# openvino_int8's routes that read the IR from a fine-tuned QDQ graph, as its report names them
FROM_ONNX_INT8 = "the fine-tuned QDQ graph of onnx_int8"
TUNED_FOR_IR = "a QDQ graph fine-tuned for this IR after NNCF's ladder failed its check"


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


def quantize_with_nncf(ctx: ExportContext, path: Path, check: FormatCheck | None = None,
                       start: dict | None = None) -> None:
    """NNCF's post-training ladder: the route of an export that has no fine-tuned INT8 graph, and the
    next one when the IR read from that graph fails its check. ``start`` resumes the ladder at that
    step, keeping the tries of the earlier climb in the report."""
    if check is not None and start is None:
        ctx.log(f"  openvino_int8: the fine-tuned graph failed the check ({check.failures[0]}); "
                "quantising with NNCF instead")
    step = start or {**OVERFLOW_LADDER[0], "weight_bits": ctx.opts.int8_weight_bits}
    notes = quantize_ir(ctx.fp32_onnx(), path, ctx.spec, ctx.images.calibration, **step,
                        held_out=ctx.images.held_out(), min_cosine=HELD_OUT_COSINE,
                        max_distance_error=MAX_DISTANCE_ERROR, max_fp32_layers=ctx.opts.max_fp32_layers,
                        threads=ctx.opts.threads)
    earlier = ctx.notes.get("openvino", {}).get("int8", {}) if start is not None else {}
    if earlier:
        notes["tries"] = earlier.get("tries", [_step_of(earlier)]) + notes.get("tries", [_step_of(notes)])
        notes["refused_steps"] = earlier.get("refused_steps", []) + [
            {"step": describe_step(earlier), "check_failures": list(check.failures)}]
    ctx.notes.setdefault("openvino", {})["int8"] = notes
    if len(notes.get("tries", ())) > 1:
        ctx.log("  OpenVINO INT8, held-out cosine on this CPU: " + ", ".join(
            f"{describe_step(t)} {t['held_out_cosine']:.5f}" for t in notes["tries"] if "held_out_cosine" in t)
            + f"; kept {describe_step(notes)}")


def _step_of(notes: dict) -> dict:
    return {key: notes[key] for key in (*OVERFLOW_LADDER[0], "held_out_cosine", "held_out_distance_error",
                                        "fp32_layers") if key in notes}


def next_ladder_step(notes: dict) -> dict | None:
    """The ladder step after the last one NNCF's route tried (not the one it kept: where no step
    agreed on held-out images, it kept the best, and the steps after it were already tried)."""
    last = _step_of((notes.get("tries") or [notes])[-1])
    index = OVERFLOW_LADDER.index({key: last[key] for key in OVERFLOW_LADDER[0]})
    return OVERFLOW_LADDER[index + 1] if index + 1 < len(OVERFLOW_LADDER) else None


def _read_fine_tuned(ctx: ExportContext, path: Path, method: str) -> None:
    # Every layer in 8 bits with the scales fine-tuning learned: faster than NNCF's files that keep
    # layers in FP32. OpenVINO's kernels round differently from ORT's (on a real MobileNet-V2 the two
    # agreed at cosine 0.989, each 0.991 to FP32), so the IR is checked on its own like every file.
    write_ir(ctx.fine_tuned_int8, path, OnnxSpec(**{**ctx.spec.__dict__, "precision": "int8"}))
    ctx.notes.setdefault("openvino", {})["int8"] = {"method": method, "fp32_layers": []}
    ctx.log("  openvino_int8: read from the fine-tuned INT8 graph (every layer INT8, its learned scales)")


def retry_openvino_int8(ctx: ExportContext, path: Path, check: FormatCheck) -> bool:
    """The next route after a failed check, cheapest first: the IR read from onnx_int8's fine-tuned
    graph -> NNCF's ladder -> the ladder's next steps (a step can agree with FP32 on the held-out
    images and still lose too much mAP: an EfficientNet-Lite0 at 7 bits on an AVX2-only EPYC, held-out
    cosine 0.9926, lost 1.6 points) -> fine-tuning now (the default export's own fine-tuning, where it
    may tune and nothing was tuned yet) and the IR read from that graph."""
    notes = ctx.notes.get("openvino", {}).get("int8", {})
    if notes.get("method") == FROM_ONNX_INT8:
        quantize_with_nncf(ctx, path, check)
        return True
    if not notes.get("method", "").startswith("NNCF"):
        return False  # the last route has run
    following = next_ladder_step(notes)
    if following is not None:
        ctx.log(f"  openvino_int8: NNCF's {describe_step(notes)} file failed the check ({check.failures[0]}); "
                f"climbing the ladder from {describe_step(following)}")
        quantize_with_nncf(ctx, path, check, start=following)
        return True
    if ctx.fine_tuned_int8 is not None:
        return False
    first = {"held_out_cosine": notes.get("held_out_cosine", float("nan"))}
    tuned = ctx.tmp / "openvino_int8_fine_tuned.onnx"
    tuning = fine_tune_after_failed_check(ctx.model, ctx.reference, ctx.fp32_onnx(), ctx.spec, ctx.images, ctx.opts,
                                          ctx.tmp, tuned, ctx.log, first, check.failures,
                                          failed_file="openvino_int8: NNCF's file")
    if tuning is None:
        return False
    ctx.fine_tuned_int8 = tuned
    _read_fine_tuned(ctx, path, TUNED_FOR_IR)
    ctx.notes["openvino"]["int8"].update(fine_tuning=tuning["fine_tuning"], nncf_check_failures=list(check.failures))
    return True


@export_format("openvino_int8", "{stem}_int8.xml", opens=open_int8_ir, companions=(".bin",), stamp=stamp_ir,
               default=False, needs_calibration=True, retry=retry_openvino_int8,
               help="OpenVINO IR, INT8: the fine-tuned QDQ graph where onnx_int8 (asked before it) fine-tuned, "
                    "else, or should that fail its check, NNCF post-training quantisation on the calibration "
                    "images (then 7-bit weights, FP32 depthwise layers, NNCF's accuracy control, while "
                    "held-out images disagree); should NNCF's file fail the check, the ladder's next steps, then "
                    "fine-tuning as onnx_int8's default route does, and the IR read from that graph")
def write_openvino_int8(ctx: ExportContext, path: Path) -> None:
    if ctx.fine_tuned_int8 is None:
        quantize_with_nncf(ctx, path)
    else:
        _read_fine_tuned(ctx, path, FROM_ONNX_INT8)
