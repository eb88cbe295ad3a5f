"""``bpm export`` end to end: load, write every requested format, verify each, report.

Nothing is reported as exported until it has been reloaded and run: weights files through our
loader, ONNX files through ``onnx.checker`` and ONNX Runtime, all against the PyTorch FP32 model
on real images. The command fails if any format misses its threshold. What each format is, how it
is written and how it is loaded for its check is its entry in :mod:`bpm.export.formats`.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from bpm.data.datasets.common import list_image_names
from bpm.errors import BpmError
from bpm.evaluation.features import embed_images, near_constant_rows
from bpm.export.formats import EXPORT_FORMATS, ExportContext, ExportFormat, default_formats
from bpm.export.options import ExportOptions, ImageSets
from bpm.export.onnx import LEGACY_INPUT_NAME, LEGACY_OUTPUT_NAME, OnnxSpec
from bpm.export.verify import (FormatCheck, add_retrieval, check_cosine,
                               describe_check, format_table, retrieval_scores, write_report)
from bpm.machine import machine_line
from bpm.models.loading import load_model
from bpm.models.meta import file_meta
from bpm.precision import PrecisionPolicy
from bpm.threads import torch_threads


def parse_formats(text: str) -> tuple[str, ...]:
    """``--formats``: a comma list of registered export formats (canonical names, in the order given)."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise BpmError(f"--formats: unknown format(s) {', '.join(unknown) or '(none)'}; "
                       f"choose from {','.join(EXPORT_FORMATS.choices())}")
    return tuple(dict.fromkeys(EXPORT_FORMATS.canonical(f) for f in formats))


def _evenly(items: Sequence, count: int) -> list:
    """``count`` items spread over the whole list (deterministic, covers all identities and cameras)."""
    if count <= 0 or len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _folder_images(folder: str) -> list[str]:
    root = Path(folder)
    if not root.is_dir():
        raise BpmError(f"--calib_images {folder}: not a folder")
    names = list_image_names(root)
    if len(names) < 2:
        raise BpmError(f"--calib_images {folder}: expected at least 2 images, found {len(names)}")
    return [str(root / n) for n in names]


def _synthetic_images(tmp: Path) -> list[str]:
    from bpm.data.synthetic import WorldConfig, generate_world

    world = generate_world(tmp / "world", WorldConfig(num_train_ids=8, num_test_ids=2, num_distractors=0, num_junk=0))
    return [str(world / "bounding_box_train" / n) for n in list_image_names(world / "bounding_box_train")]


def choose_images(opts: ExportOptions, tmp: Path) -> ImageSets:
    """Calibration images (training set) and verification images (test set), never the same files."""
    if opts.data is not None:
        from bpm.data.datasets import build_dataset

        ds = build_dataset(opts.data.dataset, opts.data.data_root or None, cuhk03_type=opts.data.cuhk03_type)
        test_set = ds.test_sets[0]
        test_paths = [r.path for r in test_set.query + test_set.gallery]
        return ImageSets(
            [r.path for r in _evenly(ds.train, opts.calib_count)], [p for p in _evenly(test_paths, opts.verify_count)],
            f"{opts.data.dataset}: calibration on training images, verification on test set {test_set.name}",
            test_set if opts.evaluate else None, [r.path for r in ds.train],
        )
    if opts.calib_images:
        paths = _folder_images(opts.calib_images)
        verification = _evenly(paths[1::2], opts.verify_count)
        calibration = _evenly(paths[0::2], opts.calib_count)
        return ImageSets(calibration, verification,
                         f"{opts.calib_images}: alternate images for calibration and verification",
                         training=paths[0::2])
    calibrated = [f for f in opts.formats if EXPORT_FORMATS.get(f).needs_calibration]
    if calibrated:
        raise BpmError(f"--formats {','.join(calibrated)} needs calibration images: give --dataset/--data_root or "
                       "--calib_images DIR")
    paths = _synthetic_images(tmp)
    return ImageSets([], _evenly(paths, opts.verify_count),
                     "no --dataset or --calib_images: verification on rendered synthetic pedestrians (bpm synth)")


def reference_features(model: torch.nn.Module, paths: Sequence[str], opts: ExportOptions) -> np.ndarray:
    """FP32 features of a PyTorch model, by the extraction every other command uses (O0 policy, CPU).

    Every format is verified against these, so they must be what ``bpm test`` and
    ``bpm.FeatureExtractor`` compute for the same images, not a second copy of the loop.
    """
    return embed_images(model, paths, PrecisionPolicy.create("O0"), opts.input_spec, opts.batch_size)


def _file_names(opts: ExportOptions, net: str) -> dict[str, str]:
    """Final file name of every registered format (its entry's pattern)."""
    size = opts.input_spec.resize_h_w
    stem = opts.name or f"{net}_{size[0]}x{size[1]}"
    weights_precision = "fp16" if opts.precision.opt_level in ("O2", "O3") else "fp32"
    return {name: EXPORT_FORMATS.get(name).file_name.format(stem=stem, weights_precision=weights_precision)
            for name in EXPORT_FORMATS.names()}


def staged_name(final: Path) -> Path:
    """Where a format is written until its check passed: hidden, beside its final name, same suffix
    (loaders look at the suffix). A verified file must never be replaced by an unchecked one."""
    return final.with_name(f".{final.stem}.unverified{final.suffix}")


def refused_name(final: Path) -> Path:
    """Where a file that failed its check is kept, for inspection, without taking the final name."""
    return final.with_name(f"{final.stem}.refused{final.suffix}")


def settle(check: FormatCheck, staged: Path, final: Path, fmt: ExportFormat) -> Path:
    """Move a checked file (and its companions) to its final name, or aside as ``*.refused.<ext>``;
    formats that can hold it record which (and how they were checked) in the file. Returns where
    the file now is."""
    target = final if check.passed else refused_name(final)
    check.status = "verified" if check.passed else "refused"
    if fmt.stamp is not None:
        fmt.stamp(staged, check.status, f"bpm export: {describe_check(check)}")
    for source, destination in zip(fmt.files(staged), fmt.files(target)):
        os.replace(source, destination)
    check.file = target.name
    return target


def check_int8_options(opts: ExportOptions) -> None:
    """One-line errors for INT8 switches, before anything is loaded or written."""
    if opts.max_fp32_layers < 0:
        raise BpmError(f"--max_fp32_layers: expected a count >= 0, got {opts.max_fp32_layers}")
    if opts.int8_sensitivity < 0:
        raise BpmError(f"--int8_sensitivity: expected a count >= 0, got {opts.int8_sensitivity}")
    if opts.qat_epochs is not None and opts.qat_epochs < 0:
        raise BpmError(f"--qat_epochs: expected a count >= 0, got {opts.qat_epochs}")
    if not (math.isfinite(opts.qat_lr) and opts.qat_lr > 0):
        raise BpmError(f"--qat_lr: expected a positive learning rate, got {opts.qat_lr}")
    if opts.int8_weight_bits not in (7, 8):
        raise BpmError(f"--int8_weight_bits: expected 8 or 7, got {opts.int8_weight_bits}")
    if opts.qat_epochs and "onnx_int8" not in opts.formats:
        raise BpmError("--qat_epochs fine-tunes for INT8: add onnx_int8 to --formats")


def run_export(opts: ExportOptions, log: Callable[[str], None] = print) -> dict:
    """Export ``opts.formats`` into ``opts.out_dir``, verify them, write ``export_report.json``.

    Returns the report; raises :class:`BpmError` (after writing the report) if a check fails.
    ``opts.threads`` (``--threads``) holds PyTorch and ONNX Runtime alike at that many CPU threads.
    """
    with torch_threads(opts.threads):
        return _run_export(opts, log)


def _run_export(opts: ExportOptions, log: Callable[[str], None]) -> dict:
    if not opts.formats:
        opts = replace(opts, formats=default_formats())
    for name in opts.formats:
        EXPORT_FORMATS.get(name)  # an unknown name is a one-line error before anything is loaded
    check_int8_options(opts)
    out = Path(opts.out_dir)
    if out.exists() and not out.is_dir():
        raise BpmError(f"--out {out}: is a file; expected a folder for the exported files")
    if Path(opts.weights).suffix == ".onnx":
        raise BpmError(f"--weights {opts.weights}: bpm export reads PyTorch weights (checkpoint, .pt, .safetensors), "
                       "not an exported graph")
    model, input_spec = load_model(opts.weights, **opts.model.overrides())
    kind = model.source_kind
    opts = replace(opts, input_spec=input_spec)
    meta = file_meta(input_spec, str(model.source_meta.get("recipe", "")))
    names = {**_file_names(opts, model.net), **opts.file_names}
    input_name, output_name = (LEGACY_INPUT_NAME, LEGACY_OUTPUT_NAME) if opts.legacy_names \
        else (opts.input_name, opts.output_name)
    spec = OnnxSpec(model.net, tuple(input_spec.resize_h_w), input_name, output_name, opts.bake_normalization,
                    input_meta=json.dumps(meta, sort_keys=True))
    log(f"Loaded {opts.weights} ({kind}, {model.net})")
    out.mkdir(parents=True, exist_ok=True)
    checks: list[FormatCheck] = []
    with tempfile.TemporaryDirectory(prefix="bpm-export-") as tmp:
        images = choose_images(opts, Path(tmp))
        log(f"Images: {images.description} ({len(images.calibration)} calibration, "
            f"{len(images.verification)} verification)")
        reference = reference_features(model, images.verification, opts)
        degenerate = bool(near_constant_rows(reference))
        if degenerate:  # as bpm test warns: every cosine and mAP below then compares ties
            log(f"WARNING {opts.weights}: the model's features are nearly the same vector for every image (the "
                "embedding does not depend on its input); the checks and scores below compare ties and are not "
                "meaningful")
        eval_paths = [r.path for r in images.test_set.query + images.test_set.gallery] if images.test_set else []
        nq = len(images.test_set.query) if images.test_set else 0
        ref_scores = None
        # Scored as bpm test scores the model: BNNeck features are compared after L2 normalisation.
        normalize = input_spec.normalize_features
        if images.test_set is not None:
            feats = reference_features(model, eval_paths, opts)
            ref_scores = retrieval_scores(feats[:nq], feats[nq:], images.test_set, normalize)

        def verify(name: str, fmt: ExportFormat, path: Path) -> FormatCheck:
            """The file as its users load it, against the original model for every format (fine-tuning
            teaches the 8-bit network to give the original's embedding; its FP32 weights drift from it)."""
            opened = fmt.opens(ctx, path)
            check = check_cosine(name, path, opened.precision, opened.features(images.verification), reference)
            check.bytes = sum(p.stat().st_size for p in fmt.files(path) if p.is_file())  # an IR's .bin too
            if fmt.retrieval and images.test_set is not None:
                feats = opened.features(eval_paths)
                add_retrieval(check, retrieval_scores(feats[:nq], feats[nq:], images.test_set, normalize),
                              ref_scores, opts.max_map_drop)
            return check

        ctx = ExportContext(model, opts, spec, meta, images, reference, Path(tmp), log)
        written: set[str] = set()
        staged: list[Path] = []  # removed whatever happens, unless settled (moved to a final or refused name)
        try:
            for name in dict.fromkeys(EXPORT_FORMATS.canonical(f) for f in opts.formats):  # in the order asked
                fmt = EXPORT_FORMATS.get(name)
                if names[name] in written:
                    continue  # e.g. pt under --opt-level O2 is already the FP16 file pt16 names
                written.add(names[name])
                final = out / names[name]
                path = staged_name(final)
                staged += fmt.files(path)
                fmt.write(ctx, path)
                check = verify(name, fmt, path)
                while not check.passed and fmt.retry is not None and fmt.retry(ctx, path, check):
                    check = verify(name, fmt, path)  # the format's next route, which says what it does
                where = settle(check, path, final, fmt)
                checks.append(check)
                # "checked": the verdict (ok, or why not) follows in the table.
                log(f"  {name}: {where.name} checked (mean cosine {check.cosine_mean:.5f}): "
                    + ("verified" if check.passed else "REFUSED, " + "; ".join(check.failures)))
        finally:
            for path in staged:
                path.unlink(missing_ok=True)

    table = format_table(checks, ref_scores)
    log(table)
    context = {
        "source": str(opts.weights), "source_kind": kind, "net": model.net, "resize_h_w": list(input_spec.resize_h_w),
        "last_conv_stride": input_spec.last_conv_stride, "opt_level": opts.precision.opt_level, "images": images.description,
        "calibration_images": len(images.calibration), "verification_images": len(images.verification),
        "onnx": {"opset": opts.opset, "input": input_name, "output": output_name,
                 "bake_normalization": opts.bake_normalization, "quant_format": opts.quant_format,
                 "calib_method": opts.calib_method, "int8_weight_bits": opts.int8_weight_bits},
        "int8": ctx.notes.get("int8") or None,
        **{k: v for k, v in ctx.notes.items() if k != "int8"},
        "degenerate_reference": degenerate,
        "machine": machine_line(),
        "reference": None if ref_scores is None else {"mAP": ref_scores[0], "rank1": ref_scores[1],
                                                      "l2_normalised": normalize,
                                                      "test_set": images.test_set.name},
        "table": table.splitlines(),
    }
    report_path = out / "export_report.json"
    write_report(report_path, checks, context)
    failed = [c for c in checks if not c.passed]
    if failed:
        tuned = (ctx.notes.get("int8") or {}).get("fine_tuning")
        hint = "" if not (any(c.format == "onnx_int8" for c in failed) and images.training) else \
            "; for INT8, try more --qat_epochs (fine-tuning with 8-bit rounding simulated)" if tuned else \
            "; for INT8, try --qat_epochs 4 or more (fine-tuning with 8-bit rounding simulated)"
        kept = "; ".join(f"{c.format} kept as {c.file}, " + (f"the earlier {names[c.format]} is unchanged"
                                                              if (out / names[c.format]).exists()
                                                              else f"no {names[c.format]} written")
                         for c in failed)
        raise BpmError(f"export check failed for {', '.join(c.format for c in failed)}: "
                       f"{failed[0].failures[0]} ({kept}; see {report_path}){hint}")
    log(f"All {len(checks)} exported files verified; report: {report_path}")
    return {"checks": checks, "report": report_path, "files": {f: out / names[f] for f in opts.formats}}
