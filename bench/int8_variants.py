"""INT8 quantisation settings compared: images/s against ORT FP32 of the same graph, same run.

    python bench/int8_variants.py                      # MobileNet-V2, 256x128, batch 32, 2 threads
    python bench/int8_variants.py --net resnet50 --spin

Why ``bpm export``'s INT8 graph is what it is (per-channel s8 weights, u8 activations per tensor,
QOperator): each variant is quantised from the same pre-processed FP32 graph with the same
calibration images and timed round-robin with the FP32 session. ``--spin`` lets ORT's intra-op
threads spin between runs (ORT's default, off in bpm's sessions) to show what that does to
sessions that take turns on the same cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.infer_speed import calibrated_model, images_per_second  # noqa: E402
from bpm.data.datasets.common import list_image_names  # noqa: E402
from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.export.onnx import OnnxSpec, export_onnx  # noqa: E402
from bpm.export.quantize import ImageCalibrationReader  # noqa: E402
from bpm.export.runtime import image_batch, session_options  # noqa: E402
from bpm.machine import print_machine  # noqa: E402


def variants(graph) -> dict[str, dict]:
    """quantize_static keyword sets; the first is bpm's default."""
    from onnxruntime.quantization import QuantFormat, QuantType

    depthwise = [n.name for n in graph.node
                 if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    base = {"quant_format": QuantFormat.QOperator, "per_channel": True, "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8}
    return {
        "per-channel u8/s8 QOperator (bpm)": base,
        "per-tensor weights": {**base, "per_channel": False},
        "reduce_range": {**base, "reduce_range": True},
        "QDQ graph": {**base, "quant_format": QuantFormat.QDQ},
        "u8 weights": {**base, "weight_type": QuantType.QUInt8},
        "s8 activations": {**base, "activation_type": QuantType.QInt8},
        "s8 activations, QDQ": {**base, "activation_type": QuantType.QInt8, "quant_format": QuantFormat.QDQ},
        f"depthwise convs FP32 ({len(depthwise)})": {**base, "nodes_to_exclude": depthwise},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", default="mobilenetV2")
    parser.add_argument("--size", default="256x128", help="HxW")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--spin", action="store_true", help="let ORT threads spin between runs (ORT's default)")
    args = parser.parse_args(argv)
    print_machine()
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    h, w = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bpm-int8-") as tmp:
        tmp = Path(tmp)
        world = generate_world(tmp / "world", WorldConfig(num_train_ids=12, num_test_ids=2, num_distractors=0,
                                                         num_junk=0, seed=5))
        folder = world / "bounding_box_train"
        paths = [str(folder / n) for n in list_image_names(folder)]
        spec = OnnxSpec(args.net, (h, w))
        fp32 = export_onnx(calibrated_model(args.net, paths, (h, w), 1), tmp / "fp32.onnx", spec)
        prepared = tmp / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        files = {"ORT FP32": fp32}
        for i, (name, options) in enumerate(variants(onnx.load(str(prepared)).graph).items()):
            files[name] = tmp / f"int8_{i}.onnx"
            quantize_static(str(prepared), str(files[name]), ImageCalibrationReader(paths[:64], spec),
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False}, **options)
        x = image_batch([paths[i % len(paths)] for i in range(args.batch)], (h, w))
        runners = {}
        for name, path in files.items():
            session = ort.InferenceSession(str(path), session_options(args.threads, args.spin),
                                           providers=["CPUExecutionProvider"])
            runners[name] = (lambda s, n: lambda: s.run(None, {n: x}))(session, session.get_inputs()[0].name)
        speed = images_per_second(runners, args.batch, args.repeats, warmup=2)
    print(f"{args.net}, {h}x{w}, batch {args.batch}, {args.threads} threads, spinning {'on' if args.spin else 'off'}, "
          f"median of {args.repeats} round-robin runs")
    for name, ips in speed.items():
        print(f"  {name:<38}{ips:9.1f} img/s  {ips / speed['ORT FP32']:5.2f}x ORT FP32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
