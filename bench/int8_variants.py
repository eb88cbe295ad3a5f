"""INT8 quantisation settings compared: accuracy and images/s against ORT FP32 of the same model, one run.

    python bench/int8_variants.py                                   # speed only: an untrained MobileNet-V2
    python bench/int8_variants.py --weights RUN/ckpt.pth --data_root ../shared/data/cuhk03_detected

With ``--weights`` and a ``folder``-layout ``--data_root`` every variant is also scored on the
held-out identities: mean/min cosine to PyTorch FP32, mAP and rank-1 (Euclidean on the exported
feature, L2-normalised for BNNeck models, as ``bpm test`` and ``bpm export`` score them), so the export's default is justified by a table per CPU.
Calibration uses training images only (evenly spread, ``--calib_count``), never test identities.
Speed: batch ``--batch`` at ``--size`` (default 256x128: the issue's operating point), ``--threads``
intra-op threads, median of ``--repeats`` round-robin runs; quantised from the same pre-processed
FP32 graph. ``--spin`` lets ORT's threads spin between runs (ORT's default, off in bpm's sessions).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.infer_speed import calibrated_model, images_per_second  # noqa: E402
from bpm.data.datasets.common import list_image_names  # noqa: E402
from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.export.equalize import equalize_ranges  # noqa: E402
from bpm.export.onnx import OnnxSpec, export_onnx  # noqa: E402
from bpm.export.quantize import ImageCalibrationReader, mse_ranges  # noqa: E402
from bpm.data.transforms import image_batch  # noqa: E402
from bpm.export.runtime import onnx_features  # noqa: E402
from bpm.models.onnx_graph import OnnxModel, session_options  # noqa: E402
from bpm.export.verify import cosine_rows, retrieval_scores  # noqa: E402
from bpm.machine import print_machine  # noqa: E402

DEFAULT = "per-channel u8/s8 QOperator, MinMax"


def variants(graph) -> dict[str, dict]:
    """Name -> quantize_static keywords, plus ``equalize`` (quantise the range-equalised graph) and
    ``mse`` (least-error activation ranges). The first is ORT's plain static quantisation."""
    from onnxruntime.quantization import QuantFormat, QuantType

    depthwise = [n.name for n in graph.node
                 if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    base = {"quant_format": QuantFormat.QOperator, "per_channel": True, "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8}
    return {
        DEFAULT: base,
        "per-tensor weights": {**base, "per_channel": False},
        "reduce_range": {**base, "reduce_range": True},
        "QDQ graph": {**base, "quant_format": QuantFormat.QDQ},
        "s8 activations": {**base, "activation_type": QuantType.QInt8},
        f"depthwise convs FP32 ({len(depthwise)})": {**base, "nodes_to_exclude": depthwise},
        "MSE ranges": {**base, "mse": True},
        "equalised": {**base, "equalize": True},
        "equalised + MSE ranges": {**base, "equalize": True, "mse": True},
        "equalised + MSE ranges, QDQ": {**base, "equalize": True, "mse": True, "quant_format": QuantFormat.QDQ},
    }


def _test_split(data_root: Path):
    from bpm.data.datasets import build_dataset

    dataset = build_dataset("folder", str(data_root))
    return dataset, dataset.test_sets[0]


def _prepare(model: torch.nn.Module, path: Path, spec: OnnxSpec) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = export_onnx(model, path.with_suffix(".raw.onnx"), spec)
    quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--net", default="mobilenetV2", help="without --weights: the untrained network to time")
    parser.add_argument("--weights", default=None, help="trained checkpoint/weights file (accuracy columns)")
    parser.add_argument("--data_root", type=Path, default=None, help="folder layout data set for --weights")
    parser.add_argument("--eval_size", default=None, help="HxW the model is scored at (default: --size)")
    parser.add_argument("--size", default="256x128", help="HxW for the speed columns")
    parser.add_argument("--calib_count", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--qat_epochs", type=int, default=0,
                        help="with --weights: add the equalised + fine-tuned (bpm export --qat_epochs) variant")
    parser.add_argument("--qat_lr", type=float, default=1e-4)
    parser.add_argument("--only", action="append", default=[], help="run only these variants (repeatable)")
    parser.add_argument("--spin", action="store_true", help="let ORT threads spin between runs (ORT's default)")
    args = parser.parse_args(argv)
    if args.weights and not args.data_root:
        parser.error("--weights needs --data_root (a folder layout data set to score on)")
    print_machine()
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    def hw(text: str) -> tuple[int, int]:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w

    speed_size = hw(args.size)
    eval_size = hw(args.eval_size or args.size)
    with tempfile.TemporaryDirectory(prefix="bpm-int8-") as tmp:
        tmp = Path(tmp)
        test_set = None
        if args.weights:
            from bpm.export.pipeline import _evenly
            from bpm.models.loading import load_model

            model, _spec = load_model(args.weights)
            dataset, test_set = _test_split(args.data_root)
            calibration = [r.path for r in _evenly(dataset.train, args.calib_count)]
            eval_paths = [r.path for r in test_set.query + test_set.gallery]
            nq = len(test_set.query)
        else:
            world = generate_world(tmp / "world", WorldConfig(num_train_ids=12, num_test_ids=2, num_distractors=0,
                                                             num_junk=0, seed=5))
            folder = world / "bounding_box_train"
            calibration = [str(folder / n) for n in list_image_names(folder)][:64]
            model = calibrated_model(args.net, calibration, eval_size, 1)
        model = model.float().eval()
        spec = OnnxSpec(getattr(model, "net", args.net), eval_size)
        equalized = copy.deepcopy(model)
        print(equalize_ranges(equalized.base, torch.from_numpy(image_batch(calibration, eval_size))).describe())
        graphs = {False: _prepare(model, tmp / "plain.onnx", spec), True: _prepare(equalized, tmp / "eq.onnx", spec)}
        chosen_variants = variants(onnx.load(str(graphs[False])).graph)
        tuned_file = None
        if args.weights and args.qat_epochs > 0:
            from bpm.export.qat import finetune_for_int8
            from bpm.export.qdq import export_fine_tuned

            student, result = finetune_for_int8(
                equalized, [r.path for r in dataset.train],
                lambda paths: torch.from_numpy(image_batch(paths, eval_size)), args.qat_epochs, args.qat_lr, log=print)
            print(result.describe())
            tuned_file = export_fine_tuned(student, tmp / "qat_int8.onnx", spec)  # its own learned ranges
        ranges = {}
        files = {"ORT FP32": graphs[False]}
        chosen = {name: v for name, v in chosen_variants.items() if not args.only or name in args.only}
        for i, (name, options) in enumerate(chosen.items()):
            options = dict(options)
            equalize, mse = options.pop("equalize", False), options.pop("mse", False)
            source = graphs[equalize]
            extra = {"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False}
            if mse:
                if equalize not in ranges:
                    ranges[equalize] = mse_ranges(source, ImageCalibrationReader(calibration, spec))
                extra["TensorQuantOverrides"] = {
                    k: [{"rmin": np.array(min(lo, 0.0), dtype=np.float32), "rmax": np.array(hi, dtype=np.float32)}]
                    for k, (lo, hi) in ranges[equalize].items()}
            files[name] = tmp / f"int8_{i}.onnx"
            quantize_static(str(source), str(files[name]), ImageCalibrationReader(calibration, spec),
                            calibrate_method=CalibrationMethod.MinMax, extra_options=extra, **options)
        if tuned_file is not None:
            files[f"equalised + QAT {args.qat_epochs} ep. (learned ranges)"] = tuned_file

        accuracy = {}
        normalize = getattr(model, "architecture", {}).get("neck") == "bnneck"  # as bpm test and bpm export score
        if test_set is not None:
            reference = None
            for name, path in files.items():
                features = onnx_features(OnnxModel(path, args.threads), eval_paths, 64)
                reference = features if reference is None else reference
                cos = cosine_rows(features, reference)
                accuracy[name] = (cos.mean(), cos.min(),
                                  *retrieval_scores(features[:nq], features[nq:], test_set, normalize))

        speed_files = files
        if eval_size != speed_size:  # same quantisation, re-exported at the speed size (dynamic shapes would differ)
            speed_files = {}
            speed_spec = OnnxSpec(spec.net, speed_size)
            plain = _prepare(model, tmp / "plain_speed.onnx", speed_spec)
            eq = _prepare(equalized, tmp / "eq_speed.onnx", speed_spec)
            speed_files["ORT FP32"] = plain
            for i, (name, options) in enumerate(chosen.items()):
                options = {k: v for k, v in options.items() if k not in ("equalize", "mse")}
                speed_files[name] = tmp / f"speed_{i}.onnx"
                quantize_static(str(eq if chosen[name].get("equalize") else plain), str(speed_files[name]),  # same graph shape
                                ImageCalibrationReader(calibration[:32], speed_spec),
                                calibrate_method=CalibrationMethod.MinMax,
                                extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
                                **options)
            if tuned_file is not None:
                speed_files[f"equalised + QAT {args.qat_epochs} ep. (learned ranges)"] = export_fine_tuned(
                    student, tmp / "qat_speed.onnx", speed_spec)
        x = image_batch([calibration[i % len(calibration)] for i in range(args.batch)], speed_size)
        runners = {}
        for name, path in speed_files.items():
            session = ort.InferenceSession(str(path), session_options(args.threads, args.spin),
                                           providers=["CPUExecutionProvider"])
            runners[name] = (lambda s, n: lambda: s.run(None, {n: x}))(session, session.get_inputs()[0].name)
        speed = images_per_second(runners, args.batch, args.repeats, warmup=2)
    h, w = speed_size
    print(f"{spec.net}; speed at {h}x{w}, batch {args.batch}, {args.threads} threads, spinning "
          f"{'on' if args.spin else 'off'}, median of {args.repeats} round-robin runs"
          + (f"; accuracy at {eval_size[0]}x{eval_size[1]} on {args.data_root.name} held-out identities, "
             f"{len(calibration)} calibration images from its training set" if accuracy else ""))
    header = "| variant | img/s | x ORT FP32 |" + (" cos mean | cos min | mAP | rank-1 |" if accuracy else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, ips in speed.items():
        row = f"| {name} | {ips:.0f} | {ips / speed['ORT FP32']:.2f} |"
        if accuracy:
            c_mean, c_min, m, r1 = accuracy[name]
            row += f" {c_mean:.4f} | {c_min:.4f} | {100 * m:.2f} | {100 * r1:.2f} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
