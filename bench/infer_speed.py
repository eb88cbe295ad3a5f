"""Inference speed per deployment format: images/s at batch 1 and 32, both networks, same run.

    python bench/infer_speed.py            # both nets, 256x128, 2 threads
    python bench/infer_speed.py --quick    # MobileNet-V2 only, fewer repeats

Compared: PyTorch eager FP32 (contiguous and channels-last), ONNX Runtime FP32, FP16 (the CPU
provider runs FP16 graphs through inserted casts where it lacks FP16 kernels) and INT8 (static,
per-channel; QOperator and, outside --quick, QDQ). Ratios are against ORT FP32 of the same
network in the same run. Backends are timed round-robin, so neither may keep the cores busy
after its turn: ORT sessions do not spin (``bpm.export.runtime.session_options``) and torch's
OpenMP threads wait passively (OMP_WAIT_POLICY, set here before torch loads). With spinning,
each backend ran on cores still held by the previous one, which cost the fastest backend most
(MobileNet-V2 INT8 measured 1.4x ORT FP32 that way, 2.1-2.4x alone). Weights are random with BatchNorm statistics measured on rendered
synthetic pedestrians, which are also the INT8 calibration images (accuracy is checked by
``bpm export``, not here; speed does not depend on the weight values).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the OpenMP runtime's start (torch import)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpm.data.datasets.common import list_image_names  # noqa: E402
from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.export.onnx import OnnxSpec, convert_to_fp16, export_onnx  # noqa: E402
from bpm.export.quantize import quantize_int8  # noqa: E402
from bpm.data.transforms import image_batch  # noqa: E402
from bpm.models.onnx_graph import OnnxModel  # noqa: E402
from bpm.machine import print_machine  # noqa: E402
from bpm.models.reid import build_model  # noqa: E402

TARGETS_BATCH32 = {"mobilenetV2": 450.0, "resnet50": 90.0}


def images_per_second(runners: dict[str, Callable[[], object]], batch: int, repeats: int,
                      warmup: int) -> dict[str, float]:
    """Median images/s per runner, timed round-robin (one run of each in turn, ``repeats`` rounds).

    Interleaving makes load from other processes fall on every backend alike, so the ratios stay
    meaningful on a shared machine even when the absolute figures do not.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def calibrated_model(net: str, paths: list[str], size: tuple[int, int], stride: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(net, stride)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, min(len(paths), 64), 16):
            model(torch.from_numpy(image_batch(paths[i:i + 16], size)))
    return model.eval()


def bench_net(net: str, args, paths: list[str], tmp: Path) -> list[dict]:
    size = args.size
    model = calibrated_model(net, paths, size, args.last_conv_stride)
    spec = OnnxSpec(net, size)
    fp32 = export_onnx(model, tmp / f"{net}_fp32.onnx", spec)
    files = {"ort_fp32": fp32, "ort_fp16": convert_to_fp16(fp32, tmp / f"{net}_fp16.onnx", spec)}
    files["ort_int8"] = quantize_int8(fp32, tmp / f"{net}_int8.onnx", spec, paths[:args.calib], "qoperator")
    if not args.quick:
        files["ort_int8_qdq"] = quantize_int8(fp32, tmp / f"{net}_int8_qdq.onnx", spec, paths[:args.calib], "qdq")
    channels_last = build_model(net, args.last_conv_stride)
    channels_last.load_state_dict(model.state_dict())
    channels_last = channels_last.eval().to(memory_format=torch.channels_last)
    rows = []
    for batch in args.batches:
        x = image_batch([paths[i % len(paths)] for i in range(batch)], size)
        xt = torch.from_numpy(x)
        xcl = xt.contiguous(memory_format=torch.channels_last)
        runners: dict[str, Callable[[], object]] = {}
        with torch.inference_mode():
            runners["torch_fp32"] = lambda: model(xt)
            runners["torch_fp32_channels_last"] = lambda: channels_last(xcl)
            for name, path in files.items():
                session = OnnxModel(path, threads=args.threads)
                runners[name] = (lambda s: lambda: s(x))(session)
            measured = images_per_second(runners, batch, args.repeats if batch > 1 else args.repeats * 4, warmup=2)
        base = measured["ort_fp32"]
        for name, ips in measured.items():
            rows.append({"net": net, "batch": batch, "backend": name, "images_per_s": ips,
                         "ms_per_batch": 1000 * batch / ips, "vs_ort_fp32": ips / base})
    return rows


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['net']:<12}{r['batch']:>6}  {r['backend']:<26}{r['images_per_s']:>9.1f}{r['ms_per_batch']:>10.1f}"
              f"{r['vs_ort_fp32']:>12.2f}", flush=True)


def print_targets(rows: list[dict]) -> None:
    for net, target in TARGETS_BATCH32.items():
        got = {r["backend"]: r for r in rows if r["net"] == net and r["batch"] == 32}
        if "ort_int8" in got:
            int8 = got["ort_int8"]
            print(f"target {net} INT8 batch 32 >= {target:.0f} img/s: {int8['images_per_s']:.1f} "
                  f"({'met' if int8['images_per_s'] >= target else 'missed'}); INT8 / ORT FP32 = "
                  f"{int8['vs_ort_fp32']:.2f} ({'met' if int8['vs_ort_fp32'] >= 2 else 'missed'} >= 2x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="MobileNet-V2 only, fewer repeats, no QDQ variant")
    parser.add_argument("--nets", default="mobilenetV2,resnet50")
    parser.add_argument("--size", default="256x128", help="HxW")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (x4 at batch 1); median")
    parser.add_argument("--calib", type=int, default=64, help="INT8 calibration images (rendered pedestrians)")
    parser.add_argument("--last_conv_stride", type=int, default=1, choices=[1, 2], help="ResNet-50 layer4 stride")
    parser.add_argument("--json", default="", help="also write the machine and the rows to this JSON file")
    args = parser.parse_args(argv)
    machine = print_machine()
    h, w = (int(v) for v in args.size.lower().split("x"))
    args.size = (h, w)
    args.batches = [int(b) for b in args.batches.split(",")]
    nets = ["mobilenetV2"] if args.quick else args.nets.split(",")
    if args.quick:
        args.repeats = min(args.repeats, 3)
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {args.threads} threads, input {h}x{w}, ResNet-50 last_conv_stride "
          f"{args.last_conv_stride}; medians of {args.repeats} runs (x4 at batch 1)")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bpm-bench-") as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(num_train_ids=12, num_test_ids=2, num_distractors=0,
                                                                 num_junk=0, seed=5))
        folder = world / "bounding_box_train"
        paths = [str(folder / n) for n in list_image_names(folder)]
        print(f"{'net':<12}{'batch':>6}  {'backend':<26}{'img/s':>9}{'ms/batch':>10}{'x ORT FP32':>12}")
        for net in nets:
            net_rows = bench_net(net, args, paths, Path(tmp))
            print_rows(net_rows)
            rows += net_rows
    print_targets(rows)
    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share the cores: absolute figures"
          " drop with load; ratios, timed round-robin, much less)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
