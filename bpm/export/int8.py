"""The ``onnx_int8`` file: the cheapest INT8 that holds on held-out images, and the record of how.

1. The FP32 source: the model, range-equalised unless that changes it (:func:`int8_source`).
2. Post-training quantisation (:func:`bpm.export.quantize.quantize_int8`), keeping up to
   ``--max_fp32_layers`` layers in FP32 should the held-out images need it.
3. Only if that still misses the held-out check (or ``--qat_epochs N`` asks for it): quantisation-aware
   fine-tuning (:mod:`bpm.export.qat`), written with its own learned ranges (:mod:`bpm.export.qdq`).
   Of the two files, the one closer to the FP32 model on the held-out images is kept.
   A post-training file that passes with layers in FP32 is timed against FP32 on this CPU: each kept
   layer adds a Quantize/Dequantize pair, and such a file can run slower than FP32. Where it does, and
   a file with every layer INT8 would not, fine-tuning runs too, for an all-INT8 file; it is kept if it
   passes the held-out check.
4. Should the post-training file pass the held-out check yet fail the export's own check, fine-tuning
   is the next route (:func:`fine_tune_after_failed_check`, called by the pipeline), unless
   ``--qat_epochs`` was given.

The held-out images are training-pool images that neither calibration nor fine-tuning sees, so the
choice is never made on images the file was fitted to; the verification images judge the result.
"""
from __future__ import annotations

import copy
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bpm.evaluation.features import image_tensor
from bpm.export.equalize import equalize_ranges
from bpm.export.onnx import OnnxSpec, export_onnx
from bpm.export.options import ExportOptions, ImageSets
from bpm.export.pipeline import reference_features
from bpm.export.qat import finetune_for_int8
from bpm.export.qdq import export_fine_tuned
from bpm.export.quantize import MAX_DISTANCE_ERROR, HeldOutCheck, passes_held_out, quantize_int8
from bpm.export.runtime import speed_ratio
from bpm.export.sensitivity import activation_sensitivity
from bpm.export.verify import COSINE_THRESHOLDS, cosine_rows

#: What INT8 must reach on held-out training-pool images before no more layers are kept FP32: half
#: the check's allowed error (1 - 0.98), since test images sit further from the calibration images
#: (a distilled MobileNet-V2 at held-out 0.984 measured 0.979 on the verification images).
HELD_OUT_COSINE = 1 - (1 - COSINE_THRESHOLDS["int8"]) / 2

#: Fine-tuning epochs when post-training INT8 misses the held-out check and ``--qat_epochs`` is not given.
AUTO_QAT_EPOCHS = 4


def int8_source(model: torch.nn.Module, reference: np.ndarray, fp32_onnx: Path, spec: OnnxSpec, images: ImageSets,
                opts: ExportOptions, tmp: Path, log: Callable[[str], None]) -> tuple[torch.nn.Module, Path, dict]:
    """The FP32 model and graph INT8 is made from, and what the report says about them.

    Range-equalised (same function) unless turned off. The equalised copy is checked against the
    model's verification features (``reference``, already computed by the export); should ReLU6
    clipping make it differ (a channel far above its calibration range), the plain model is used.
    With ``--int8_sensitivity N`` the N activations whose 8-bit rounding alone costs the most cosine
    are reported.
    """
    notes: dict = {"calibration_images": len(images.calibration), "calib_method": opts.calib_method}
    calibration = image_tensor(images.calibration, opts.input_spec)
    source_model, source = model, fp32_onnx
    if opts.int8_equalize:
        equalized = copy.deepcopy(model).float().eval()
        result = equalize_ranges(equalized.base, calibration, opts.batch_size)
        agreement = cosine_rows(reference_features(equalized, images.verification, opts), reference).min()
        if agreement < COSINE_THRESHOLDS["fp32"]:
            notes["equalisation"] = f"skipped: the equalised model differs (cosine {agreement:.6f})"
        else:
            notes["equalisation"] = result.describe()
            source_model, source = equalized, export_onnx(equalized, tmp / "equalized_fp32.onnx", spec, opts.opset)
    else:
        notes["equalisation"] = "off (--int8_equalize false)"
    log(f"  INT8 source: {notes['equalisation']}; ranges: {opts.calib_method} on {len(images.calibration)} images")
    if opts.int8_sensitivity > 0:
        check = image_tensor(images.verification, opts.input_spec)
        rows = activation_sensitivity(source_model.float(), calibration, check)[:opts.int8_sensitivity]
        notes["sensitivity"] = [{"activation": r.point, "range": [r.low, r.high], "cosine_alone": r.cosine}
                                for r in rows]
        log("  INT8 sensitivity (cosine with only this activation in 8 bits): "
            + ", ".join(f"{r.point} {r.cosine:.4f}" for r in rows))
    return source_model, source, notes


def slower_than_it_could_be(ptq: dict) -> bool:
    """Whether the post-training file runs slower than FP32 here while every layer INT8 would run faster
    (:func:`time_against_fp32`'s figures): only then can fine-tuning buy speed."""
    return ptq.get("images_per_s_vs_fp32", 1.0) < 1.0 and ptq.get("all_int8_vs_fp32", 0.0) > 1.0


def fine_tuning_epochs(opts: ExportOptions, ptq: dict, images: ImageSets) -> int:
    """How many epochs to fine-tune: ``--qat_epochs`` when given; otherwise :data:`AUTO_QAT_EPOCHS` if
    post-training INT8 missed the held-out check or :func:`slower_than_it_could_be`, and training
    images are there to tune on (0: none)."""
    if opts.qat_epochs is not None:
        return opts.qat_epochs
    missed = "held_out_cosine" in ptq and not passes_held_out(ptq, HELD_OUT_COSINE)
    return AUTO_QAT_EPOCHS if (missed or slower_than_it_could_be(ptq)) and images.training else 0


def time_against_fp32(fp32_onnx: Path, source: Path, path: Path, spec: OnnxSpec, images: ImageSets,
                      opts: ExportOptions, tmp: Path, notes: dict, log: Callable[[str], None]) -> None:
    """Time the post-training file, which keeps layers in FP32, against the FP32 file on this CPU
    (``images_per_s_vs_fp32``). Where it is the slower, time a file with every layer INT8 too
    (``all_int8_vs_fp32``, quantised without the held-out ladder: speed only): a real MobileNet-V2
    with 4 FP32 layers ran 0.95x FP32, while all-INT8 files run 1.3-2.5x on CPUs with VNNI, and below
    1x where ONNX Runtime needs its exact kernels (no VNNI), where no INT8 file is faster."""
    ratio = speed_ratio(fp32_onnx, path, opts.threads)
    notes["images_per_s_vs_fp32"] = round(ratio, 2)
    line = (f"  INT8: with {len(notes['fp32_layers'])} layer(s) in FP32 this file serves {ratio:.2f}x the FP32 "
            "file's images/s on this CPU (ONNX Runtime, batch 32)")
    if ratio < 1.0:
        probe = quantize_int8(source, tmp / "all_int8_probe.onnx", spec, images.calibration[:8], opts.quant_format,
                              "minmax", max_fp32_layers=0, weight_bits=opts.int8_weight_bits)
        notes["all_int8_vs_fp32"] = round(speed_ratio(fp32_onnx, probe, opts.threads), 2)
        line += f"; with every layer INT8, {notes['all_int8_vs_fp32']:.2f}x"
        if opts.qat_epochs == 0 and notes["all_int8_vs_fp32"] > 1.0:
            line += " (--qat_epochs 4 fine-tunes such a file)"
    log(line)


def write_int8(model: torch.nn.Module, reference: np.ndarray, fp32_onnx: Path, spec: OnnxSpec, images: ImageSets,
               opts: ExportOptions, tmp: Path, path: Path, log: Callable[[str], None]) -> dict:
    """Write the INT8 graph to ``path`` by the cheapest path that holds (module docstring); return the
    report's ``int8`` section, which names the path used (``int8_path``: ``post-training`` or
    ``fine-tuned``) and both files' held-out agreement."""
    source_model, source, notes = int8_source(model, reference, fp32_onnx, spec, images, opts, tmp, log)
    held_out = images.held_out()
    quantize_int8(source, path, spec, images.calibration, opts.quant_format, opts.calib_method,
                  held_out=held_out, min_cosine=HELD_OUT_COSINE, max_fp32_layers=opts.max_fp32_layers,
                  notes=notes, weight_bits=opts.int8_weight_bits)
    notes["int8_path"] = "post-training"
    missed = "held_out_cosine" in notes and not passes_held_out(notes, HELD_OUT_COSINE)
    if notes.get("fp32_layers"):
        log(f"  INT8: {len(notes['fp32_layers'])} layer(s) kept in FP32 (their weights alone cost the most "
            f"cosine): {', '.join(notes['fp32_layers'])}; held-out cosine {notes['held_out_cosine']:.5f}, "
            f"distance error {notes['held_out_distance_error']:.3f} of the distances' spread")
        tuning_anyway = opts.qat_epochs or (opts.qat_epochs is None and missed and images.training)
        if not tuning_anyway:
            time_against_fp32(fp32_onnx, source, path, spec, images, opts, tmp, notes, log)
    epochs = fine_tuning_epochs(opts, notes, images)
    if epochs == 0:
        return notes
    for_speed = opts.qat_epochs is None and not missed  # passed, but slower than FP32 (slower_than_it_could_be)
    if opts.qat_epochs is None and missed:
        log(f"  INT8: post-training misses the held-out check (cosine {notes['held_out_cosine']:.5f}, needs "
            f"{HELD_OUT_COSINE}; distance error {notes['held_out_distance_error']:.3f}, at most {MAX_DISTANCE_ERROR}): "
            f"fine-tuning {epochs} epochs (--qat_epochs 0 skips this)")
    elif for_speed:
        log(f"  INT8: post-training passes but runs {notes['images_per_s_vs_fp32']:.2f}x FP32 here, every layer INT8 "
            f"{notes['all_int8_vs_fp32']:.2f}x: fine-tuning {epochs} epochs for an all-INT8 file (--qat_epochs 0 "
            "skips this)")
    tuned, result, agreement = _fine_tuned_file(source_model, source, images, held_out, spec, opts, tmp, epochs, log)
    notes["fine_tuning"] = result.describe()
    notes["fine_tuned"] = agreement
    post_training = {k: notes[k] for k in ("held_out_cosine", "held_out_distance_error", "images_per_s_vs_fp32")
                     if k in notes}
    if for_speed:  # both pass: the all-INT8 file, unless it misses the held-out check
        better = not agreement or passes_held_out(agreement, HELD_OUT_COSINE)
    else:
        better = not post_training or (agreement and agreement["held_out_cosine"] > post_training["held_out_cosine"])
    notes["post_training"] = post_training
    if better:
        shutil.copyfile(tuned, path)
        notes.update(int8_path="fine-tuned", fp32_layers=[], **agreement)
        notes.pop("images_per_s_vs_fp32", None)  # the post-training file's: kept under post_training
    log(f"  {result.describe()}; held-out cosine: post-training "
        f"{post_training.get('held_out_cosine', float('nan')):.5f}, fine-tuned "
        f"{agreement.get('held_out_cosine', float('nan')):.5f}; kept the {notes['int8_path']} file")
    return notes


def fine_tune_after_failed_check(model: torch.nn.Module, reference: np.ndarray, fp32_onnx: Path, spec: OnnxSpec,
                                 images: ImageSets, opts: ExportOptions, tmp: Path, path: Path,
                                 log: Callable[[str], None], first: dict, failures: list[str],
                                 failed_file: str = "INT8: the post-training file") -> dict | None:
    """The default export's second route, for a post-training file that passed the held-out check but
    failed the export's own check (the held-out images are few and close to the calibration images,
    so the two can disagree near the limits): fine-tune :data:`AUTO_QAT_EPOCHS` epochs and write the
    tuned file at ``path`` for the pipeline to check. Returns the new ``int8`` report section, or None
    where there is no such route: ``--qat_epochs`` given (0 or N), fine-tuning already run, or no
    training images to tune on. The routes are tried in a fixed order, cheapest first; the check only
    says pass or fail, it never ranks the two files. ``failed_file`` names the refused file in the log
    line, since another format (OpenVINO's NNCF file) takes this route too.
    """
    if opts.qat_epochs is not None or "fine_tuning" in first or not images.training:
        return None
    log(f"  {failed_file} failed the export's check ({failures[0]}): fine-tuning "
        f"{AUTO_QAT_EPOCHS} epochs (--qat_epochs 0 skips this)")
    source_model, source, notes = int8_source(model, reference, fp32_onnx, spec, images, opts, tmp, lambda _: None)
    tuned, result, agreement = _fine_tuned_file(source_model, source, images, images.held_out(), spec, opts, tmp,
                                                AUTO_QAT_EPOCHS, log)
    shutil.copyfile(tuned, path)
    log(f"  {result.describe()}; held-out cosine: post-training {first.get('held_out_cosine', float('nan')):.5f}, "
        f"fine-tuned {agreement.get('held_out_cosine', float('nan')):.5f}")
    post_training = {k: first[k] for k in ("held_out_cosine", "held_out_distance_error", "fp32_layers") if k in first}
    return {**notes, **agreement, "int8_path": "fine-tuned", "fp32_layers": [], "fine_tuning": result.describe(),
            "fine_tuned": agreement, "post_training": {**post_training, "check_failures": list(failures)}}


def _fine_tuned_file(source_model: torch.nn.Module, source: Path, images: ImageSets, held_out: list, spec: OnnxSpec,
                     opts: ExportOptions, tmp: Path, epochs: int, log: Callable[[str], None]):
    """Fine-tune on the training images minus the held-out ones, write the tuned QDQ graph; (its path,
    the :class:`~bpm.export.qat.QatResult`, its held-out agreement with the FP32 source)."""
    unseen = set(held_out)
    tuning_images = [p for p in images.training if p not in unseen]
    student, result = finetune_for_int8(source_model, tuning_images, partial(image_tensor, spec=opts.input_spec),
                                        epochs, opts.qat_lr, log=log, weight_bits=opts.int8_weight_bits)
    tuned = export_fine_tuned(student, tmp / "int8_fine_tuned.onnx", spec, opts.opset)
    agreement = HeldOutCheck(source, held_out, spec)(tuned) if held_out else {}
    return tuned, result, agreement
