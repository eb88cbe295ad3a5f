"""Inference speed per deployment format and runtime: images/s at batch 1 and 32, every size, same run.

    python bench/infer_speed.py            # both nets, their own input size and 256x128, 2 threads
    python bench/infer_speed.py --quick    # MobileNet-V2 only, fewer repeats
    python bench/infer_speed.py --weights model.pth --reference edge_int8.xml@256x128 --reference other.onnx

Runtimes: ONNX Runtime FP32/FP16/INT8 and, where ``openvino`` (and ``nncf``) are installed
(``pip install 'bpm[openvino]'``), OpenVINO FP32 IR at the CPU's default inference precision
(bf16 on AMX, FP32 elsewhere: the row names which) and OpenVINO INT8 (NNCF post-training
quantisation, as ``bpm export --formats openvino_int8`` makes it). ``--reference FILE.onnx|FILE.xml[@HxW]``
times other models alongside (ONNX under ORT and OpenVINO, an IR under OpenVINO) at their own size.

Compared: PyTorch eager FP32 (contiguous and channels-last), ONNX Runtime FP32, FP16 (the CPU
provider runs FP16 graphs through inserted casts where it lacks FP16 kernels) and INT8 (static,
per-channel; QOperator and, outside --quick, QDQ). On CPUs without VNNI (AVX2-only x86) ORT INT8
runs with ``session.x64quantprecision`` (exact u8 x u8 kernels, see ``bpm.models.onnx_graph``), as
bpm's sessions do there; the ``ort_int8_saturating`` row times the same file without it, and
``ort_int8_w7`` a file with 7-bit weights (``--int8_weight_bits 7``), which the fast kernels compute
exactly. There the OpenVINO INT8 rows are every step of the export's overflow ladder
(``bpm.export.openvino.OVERFLOW_LADDER``): 8-bit ``ov_int8``, 7-bit ``ov_int8_w7`` and 7-bit with the
depthwise layers in FP32 ``ov_int8_w7_dw_fp32`` (not the ladder's last step, whose FP32 layers depend
on the real weights: time a real file with ``--reference``). ``--streams N`` (default 2) adds
``*_Nstreams`` rows: each OpenVINO INT8 file with the batch split into N parts run at once, one
thread each (OpenVINO's throughput mode, ``OpenVinoModel(streams=N)``), and, so that the FP32
baseline gets the same trick, ``ort_fp32_Nsessions``: N one-thread ORT sessions on the N parts
at once. OpenVINO rows run a copy compiled for the batch's fixed shape (``OpenVinoModel``'s default);
``--dynamic`` adds ``*_dynamic`` rows, each OpenVINO INT8 file compiled for any batch size, as OpenVINO
reads the IR: what the fixed shape gains. Ratios are against ORT FP32 of the same
network, size and batch in the same run. Backends are timed round-robin, so neither may keep the cores busy
after its turn: ORT sessions do not spin (``bpm.export.runtime.session_options``) and torch's
OpenMP threads wait passively (OMP_WAIT_POLICY, set here before torch loads). With spinning,
each backend ran on cores still held by the previous one, which cost the fastest backend most
(MobileNet-V2 INT8 measured 1.4x ORT FP32 that way, 2.1-2.4x alone). Weights are random with BatchNorm statistics measured on rendered
synthetic pedestrians, which are also the INT8 calibration images (accuracy is checked by
``bpm export``, not here; speed does not depend on the weight values).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the OpenMP runtime's start (torch import)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpm.data.datasets.common import list_image_names  # noqa: E402
from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.export.onnx import OnnxSpec, convert_to_fp16, export_onnx  # noqa: E402
from bpm.export.quantize import quantize_int8  # noqa: E402
from bpm.data.transforms import image_batch  # noqa: E402
from bpm.models.onnx_graph import OnnxModel, this_cpu_saturates  # noqa: E402
from bpm.machine import isa_cap, print_machine  # noqa: E402
from bpm.models.openvino_graph import openvino_int8_saturates  # noqa: E402
from bpm.models.loading import load_model  # noqa: E402
from bpm.models.reid import build_model  # noqa: E402

try:  # optional: pip install 'bpm[openvino]'
    import nncf  # noqa: F401,E402
    import openvino  # noqa: F401,E402

    from bpm.export.openvino import OVERFLOW_LADDER, quantize_ir, write_ir  # noqa: E402
    from bpm.models.openvino_graph import FIXED_BATCHES, OpenVinoModel  # noqa: E402
    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False

TARGETS_BATCH32 = {"mobilenetV2": 450.0, "resnet50": 90.0}
# OpenVINO INT8 rows by overflow-ladder step (bpm.export.openvino.OVERFLOW_LADDER): (weight bits, depthwise FP32)
OV_INT8_ROWS = {(8, False): "ov_int8", (7, False): "ov_int8_w7", (7, True): "ov_int8_w7_dw_fp32"}
# Rows whose kernels add u8 x s8 pairs in saturating int16 on CPUs without VNNI (bpm.export.saturation)
SATURATING_ROWS = {"ort_int8_saturating", "ov_int8", "ov_int8_w7"}
# A row timed with the batch split across N streams or sessions: "ov_int8_2streams", "ort_fp32_2sessions"
SPLIT_ROW = re.compile(r"_(\d+)(streams|sessions)(?=:|$)")


class SplitSessions:
    """N ORT sessions of one file with ``threads // N`` threads each, every one on its part of the batch
    at once: the FP32 baseline given what OpenVINO's streams do (ORT releases the GIL while it runs)."""

    def __init__(self, path: Path, sessions: int, threads: int) -> None:
        self.runners = [OnnxModel(path, threads=max(1, threads // sessions)) for _ in range(sessions)]
        self.pool = ThreadPoolExecutor(sessions)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        parts = np.array_split(images, min(len(self.runners), len(images)))
        return np.concatenate(list(self.pool.map(lambda job: job[0](job[1]), zip(self.runners, parts))))


def split_rows(files: dict[str, Path], streams: int, dynamic: bool = False) -> dict[str, Path]:
    """``files`` plus, for ``streams`` > 1, a split row of each OpenVINO INT8 file and of the ORT FP32 base,
    and with ``dynamic`` a dynamic-batch row of each OpenVINO INT8 file."""
    extra = {}
    for name, path in files.items():
        kind, colon, stem = name.partition(":")
        if kind.startswith("ov_int8") and streams > 1:
            extra[f"{kind}_{streams}streams{colon}{stem}"] = path
        elif kind == "ort_fp32" and streams > 1:
            extra[f"{kind}_{streams}sessions{colon}{stem}"] = path
        if kind.startswith("ov_int8") and dynamic:
            extra[f"{kind}_dynamic{colon}{stem}"] = path
    return {**files, **extra}


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


def model_files(model: torch.nn.Module, net: str, size: tuple[int, int], args, paths: list[str],
                tmp: Path) -> dict[str, Path]:
    """Every deployment file of one model at one input size, by runtime row name."""
    spec = OnnxSpec(net, size)
    stem = tmp / f"{net}_{size[0]}x{size[1]}"
    fp32 = export_onnx(model, f"{stem}_fp32.onnx", spec)
    files = {"ort_fp32": fp32, "ort_fp16": convert_to_fp16(fp32, f"{stem}_fp16.onnx", spec)}
    calibration = paths[:args.calib]
    files["ort_int8"] = quantize_int8(fp32, Path(f"{stem}_int8.onnx"), spec, calibration, "qoperator")
    saturates = this_cpu_saturates()
    ov_saturates = openvino_int8_saturates(saturates, isa_cap())
    if saturates:  # ORT INT8 runs its exact u8 x u8 kernels here; also time the saturating default
        files["ort_int8_saturating"] = files["ort_int8"]
        files["ort_int8_w7"] = quantize_int8(fp32, Path(f"{stem}_int8_w7.onnx"), spec, calibration, "qoperator",
                                             weight_bits=7)
    if not args.quick:
        files["ort_int8_qdq"] = quantize_int8(fp32, Path(f"{stem}_int8_qdq.onnx"), spec, calibration, "qdq")
    if HAVE_OPENVINO:
        files["ov_default"] = write_ir(fp32, Path(f"{stem}_fp32.xml"), spec)
        # the overflow ladder's steps where the 8-bit IR saturates, else its first step only; not its last,
        # NNCF's accuracy control: which layers it keeps in FP32 depends on real weights (time that file
        # with --reference)
        for step in [s for s in OVERFLOW_LADDER if not s["accuracy_control"]] if ov_saturates else OVERFLOW_LADDER[:1]:
            name = OV_INT8_ROWS[step["weight_bits"], step["depthwise_fp32"]]
            files[name] = Path(f"{stem}_{name}.xml")
            quantize_ir(fp32, files[name], spec, calibration, **step)
    return split_rows(files, args.streams, args.dynamic)


def graph_runner(name: str, path: Path, threads: int) -> tuple[str, Callable[[object], object]]:
    """(row name, runner) of a file: OpenVINO rows are named by the precision the compiled model runs at;
    ``*_saturating`` rows run an INT8 file without ``session.x64quantprecision`` (what it costs)."""
    split = SPLIT_ROW.search(name)
    if split and split[2] == "sessions":
        return name, SplitSessions(path, int(split[1]), threads)
    if name.startswith("ov_"):
        runner = OpenVinoModel(path, threads=threads, streams=int(split[1]) if split else 1,
                               fixed_batches=0 if "_dynamic" in name.partition(":")[0] else FIXED_BATCHES)
        return name.replace("ov_default", f"ov_{runner.inference_precision}(default)"), runner
    return name, OnnxModel(path, threads=threads, precise_int8=False if name.endswith("_saturating") else None)


def time_files(label: str, size: tuple[int, int], files: dict[str, Path], extra: dict[str, Callable], args,
               paths: list[str] | None, base: str = "ort_fp32",
               own_sizes: dict[str, tuple[int, int]] | None = None) -> list[dict]:
    """Rows of one model at one size: every runtime round-robin per batch, ratios against the ``base`` row.
    A file named in ``own_sizes`` runs at its own input size in the same round-robin (``--versus``)."""
    own_sizes = own_sizes or {}
    rows = []
    for batch in args.batches:
        inputs = {}
        for shape in {size, *own_sizes.values()}:
            if paths:
                inputs[shape] = image_batch([paths[i % len(paths)] for i in range(batch)], shape)
            else:
                inputs[shape] = np.random.default_rng(0).random((batch, 3, *shape), dtype=np.float32)
        x = inputs[size]
        runners: dict[str, Callable[[], object]] = {name: (lambda f: lambda: f(x))(run) for name, run in extra.items()}
        row_sizes = {}
        for name, path in files.items():
            shape = own_sizes.get(name, size)
            try:
                row_name, runner = graph_runner(name, path, args.threads)
                runner(inputs[shape])
            except Exception as exc:  # e.g. a reference model with a fixed batch of 1
                print(f"{label:<24} {shape[0]}x{shape[1]:<5}{batch:>6}  {name}: cannot run ({str(exc).splitlines()[0]})")
                continue
            runners[row_name] = (lambda r, images: lambda: r(images))(runner, inputs[shape])
            row_sizes[row_name] = shape
        with torch.inference_mode():
            measured = images_per_second(runners, batch, args.repeats if batch > 1 else args.repeats * 4, warmup=2)
        base_ips = measured.get(base)
        for name, ips in measured.items():
            shape = row_sizes.get(name, size)
            rows.append({"net": label, "size": f"{shape[0]}x{shape[1]}", "batch": batch, "backend": name,
                         "images_per_s": ips, "ms_per_batch": 1000 * batch / ips,
                         "vs_ort_fp32": ips / base_ips if base_ips else float("nan")})
    return rows


def model_sizes(spec_size: tuple[int, int], args) -> list[tuple[int, int]]:
    """``--sizes`` if given, else the model's own input size and 256x128."""
    return args.sizes or list(dict.fromkeys([tuple(spec_size), (256, 128)]))


def bench_net(net: str, args, paths: list[str], tmp: Path) -> list[dict]:
    if args.weights:
        model, spec = load_model(args.weights)
        net = spec.net or net
    else:
        _fresh, spec = load_model(net)  # the backbone's default input size
        model = None
    rows = []
    for size in model_sizes(spec.resize_h_w, args):
        if model is None:  # random weights, BatchNorm statistics from rendered pedestrians (speed only)
            model = calibrated_model(net, paths, size, args.last_conv_stride)
        files = model_files(model, net, size, args, paths, tmp)
        channels_last = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        extra = {"torch_fp32": lambda x: model(torch.from_numpy(x)),
                 "torch_fp32_channels_last":
                     lambda x: channels_last(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))}
        size_rows = time_files(net, size, files, extra, args, paths)
        print_rows(size_rows)
        rows += size_rows
    return rows


def parse_reference(text: str) -> tuple[Path, tuple[int, int] | None]:
    """``FILE.onnx|FILE.xml[@HxW]``: without a size, the file's own fixed input size."""
    name, _, size = text.partition("@")
    path = Path(name)
    if path.suffix not in (".onnx", ".xml") or not path.is_file():
        raise SystemExit(f"--reference {text}: expected an existing FILE.onnx or FILE.xml, optionally @HxW")
    if not size:
        return path, None
    h, w = (int(v) for v in size.lower().split("x"))
    return path, (h, w)


def reference_size(path: Path) -> tuple[int, int]:
    if path.suffix == ".onnx":
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        h, w = dims[2].dim_value, dims[3].dim_value
    else:
        shape = openvino.Core().read_model(str(path)).input(0).get_partial_shape()
        h, w = (shape[i].get_length() if shape[i].is_static else 0 for i in (2, 3))
    if not (h and w):
        raise SystemExit(f"--reference {path}: its input size is not fixed; give FILE@HxW")
    return h, w


def graph_precision(path: Path) -> str:
    """``int8`` for a quantised ONNX graph or IR, else ``fp32`` (the file's own ops say it, so files from
    elsewhere, which carry no bpm metadata, are named right too)."""
    if path.suffix == ".onnx":
        import onnx

        quantised = {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul"}
        graph = onnx.load(str(path), load_external_data=False).graph
        return "int8" if any(node.op_type in quantised for node in graph.node) else "fp32"
    ops = openvino.Core().read_model(str(path)).get_ops()
    return "int8" if any(op.get_type_name() == "FakeQuantize" or (
        op.get_type_name() == "Constant" and op.get_element_type() in (openvino.Type.i8, openvino.Type.u8))
        for op in ops) else "fp32"


def bench_references(texts: list[str], args) -> list[dict]:
    """Models from elsewhere, or several exports of one model, timed together (round-robin) per input
    size: an ONNX file under ORT (``ort_fp32:STEM`` / ``ort_int8:STEM``) and OpenVINO (``ov_int8:STEM.onnx``),
    an IR under OpenVINO (``ov_int8:STEM`` or named by the precision it runs at; an export's ``model_int8.onnx``
    and ``model_int8.xml`` share a stem, so OpenVINO's rows name the ONNX file's suffix). Ratios are against the group's
    first ORT FP32 file, so ``--reference model_fp32.onnx --reference model_int8.onnx --reference
    model_int8.xml`` compares a real model's deployment files."""
    groups: dict[tuple[int, int], dict[str, Path]] = {}
    for text in texts:
        path, size = parse_reference(text)
        files = groups.setdefault(size or reference_size(path), {})
        precision = graph_precision(path) if path.suffix == ".onnx" or HAVE_OPENVINO else "fp32"
        if path.suffix == ".onnx":
            files[f"ort_{precision}:{path.stem}"] = path
        if HAVE_OPENVINO:
            name = path.name if path.suffix == ".onnx" else path.stem
            files[f"ov_{'int8' if precision == 'int8' else 'default'}:{name}"] = path
    rows = []
    groups = {size: split_rows(files, args.streams, args.dynamic) for size, files in groups.items()}
    versus = {size: path for size, files in groups.items() for name, path in files.items()
              if args.versus and name == f"ort_fp32:{args.versus}"}
    for size, files in groups.items():
        base = next((name for name in files if name.startswith("ort_fp32:")), "")
        label = "ref:" + "+".join(dict.fromkeys(name.partition(":")[2].removesuffix(".onnx") for name in files
                                                if not SPLIT_ROW.search(name)))
        own_sizes = {}
        for versus_size, path in versus.items():  # the --versus file joins every other group's round-robin
            if versus_size != size:
                files = {**files, f"ort_fp32:{args.versus}": path}
                own_sizes[f"ort_fp32:{args.versus}"] = versus_size
        size_rows = time_files(label, size, files, {}, args, None, base=base, own_sizes=own_sizes)
        print_rows(size_rows)
        rows += size_rows
    return rows


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['net']:<24} {r['size']:<9}{r['batch']:>6}  {r['backend']:<26}{r['images_per_s']:>9.1f}"
              f"{r['ms_per_batch']:>10.1f}{r['vs_ort_fp32']:>12.2f}", flush=True)


def print_targets(rows: list[dict]) -> None:
    for net, target in TARGETS_BATCH32.items():
        got = {r["backend"]: r for r in rows if r["net"] == net and r["batch"] == 32 and r["size"] == "256x128"}
        if "ort_int8" in got:
            int8 = got["ort_int8"]
            print(f"target {net} INT8 batch 32 >= {target:.0f} img/s: {int8['images_per_s']:.1f} "
                  f"({'met' if int8['images_per_s'] >= target else 'missed'}); INT8 / ORT FP32 = "
                  f"{int8['vs_ort_fp32']:.2f} ({'met' if int8['vs_ort_fp32'] >= 2 else 'missed'} >= 2x)")


def print_best_format(rows: list[dict], saturates: bool, ov_saturates: bool | None = None) -> None:
    """Issue #30's target: the fastest format at 256x128 batch 32 against ORT FP32, >= 3x on VNNI CPUs and
    >= 1.8x on AVX2-only ones, counting only rows that compute what the export verified on this CPU
    (where 8-bit weights saturate, the 8-bit OpenVINO IRs and the saturating ORT session do not). Where a
    split row is the best, its ratio to ORT FP32 split the same way is printed too.

    ``ov_saturates`` (default: ``saturates``) is where only OpenVINO's kernels saturate: a VNNI CPU with
    oneDNN capped at AVX2. Its OpenVINO rows are then judged as an AVX2-only CPU's, against 1.8x, and
    its ONNX Runtime INT8 rows, which still run VNNI kernels, are not counted."""
    ov_saturates = saturates if ov_saturates is None else ov_saturates
    excluded = {row for row in SATURATING_ROWS
                if (saturates if row.startswith("ort_") else ov_saturates)}  # each runtime by its own kernels
    target = 1.8 if ov_saturates else 3.0
    for net in dict.fromkeys(r["net"] for r in rows if not r["net"].startswith("ref:")):  # refs mix models
        at_256 = [r for r in rows if r["net"] == net and r["batch"] == 32 and r["size"] == "256x128"]
        got = [r for r in at_256 if SPLIT_ROW.sub("", r["backend"]).replace("_dynamic", "") not in excluded
               and not r["backend"].startswith("ort_fp32")
               and (ov_saturates == saturates or r["backend"].startswith("ov_"))]
        if got:
            best = max(got, key=lambda r: r["vs_ort_fp32"])
            split_base = next((r for r in at_256 if SPLIT_ROW.search(r["backend"])
                               and r["backend"].startswith("ort_fp32")), None)
            also = (f"; {best['images_per_s'] / split_base['images_per_s']:.2f}x {split_base['backend']}"
                    if split_base and SPLIT_ROW.search(best["backend"]) else "")
            print(f"target {net} best format at 256x128 batch 32 >= {target}x ORT FP32 "
                  f"({'AVX2-only' if ov_saturates else 'VNNI'} CPU{'' if ov_saturates == saturates else ', OpenVINO capped'}): {best['backend']} {best['vs_ort_fp32']:.2f}x "
                  f"({'met' if best['vs_ort_fp32'] >= target else 'missed'}){also}")


def print_versus(rows: list[dict], stem: str) -> list[tuple[str, float]]:
    """Every row against one reference file's ORT FP32 row (``--versus STEM``) timed in the same
    round-robin: that file joins every reference group at its own input size, so a student at 128x64 is
    timed in turn with its teacher at 256x128 and load from other processes falls on both alike.
    Returns (row, ratio) pairs, fastest first, per group and batch."""
    ratios = []
    for base in (r for r in rows if r["backend"] == f"ort_fp32:{stem}"):
        others = [r for r in rows if r["batch"] == base["batch"] and r["net"] == base["net"]  # same round-robin
                  and r["backend"].partition(":")[2].removesuffix(".onnx") != stem]  # not the file's own rows
        if not others:
            continue
        print(f"against {stem} (ORT FP32, {base['size']}, batch {base['batch']}: {base['images_per_s']:.1f} img/s), "
              f"in the round-robin of {base['net']}:")
        for r in sorted(others, key=lambda r: -r["images_per_s"]):
            name = f"{r['net']} {r['size']} {r['backend']}"
            ratios.append((name, r["images_per_s"] / base["images_per_s"]))
            print(f"  {name:<70} {r['images_per_s']:>9.1f} {ratios[-1][1]:>7.2f}x")
    if not ratios:
        print(f"--versus {stem}: no ORT FP32 row of a --reference file with that stem")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="MobileNet-V2 only, fewer repeats, no QDQ variant")
    parser.add_argument("--nets", default="mobilenetV2,resnet50", help="random-weight nets to time ('': none, "
                        "only --weights / --reference files)")
    parser.add_argument("--sizes", default="", help="HxW list (default: each model's own input size and 256x128)")
    parser.add_argument("--weights", default="", help="time this model file (bpm.load_model) instead of --nets")
    parser.add_argument("--reference", action="append", default=[],
                        help="FILE.onnx or FILE.xml[@HxW]: another model timed alongside (repeatable)")
    parser.add_argument("--versus", default="",
                        help="STEM of a --reference .onnx file: also print every row against its ORT FP32 row "
                             "(e.g. a student's files against its teacher as downloaded)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=2,
                        help="also time OpenVINO INT8 with the batch split across N streams, and ORT FP32 across "
                             "N sessions (1: no such rows)")
    parser.add_argument("--dynamic", action="store_true",
                        help="also time each OpenVINO INT8 file compiled for a dynamic batch (the baseline of the "
                             "fixed-shape copies bpm compiles)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (x4 at batch 1); median")
    parser.add_argument("--calib", type=int, default=64, help="INT8 calibration images (rendered pedestrians)")
    parser.add_argument("--last_conv_stride", type=int, default=1, choices=[1, 2], help="ResNet-50 layer4 stride")
    parser.add_argument("--json", default="", help="also write the machine and the rows to this JSON file")
    args = parser.parse_args(argv)
    machine = print_machine()
    args.sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
    args.batches = [int(b) for b in args.batches.split(",")]
    nets = ["weights"] if args.weights else ["mobilenetV2"] if args.quick else [n for n in args.nets.split(",") if n]
    if args.quick:
        args.repeats = min(args.repeats, 3)
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {args.threads} threads, ResNet-50 last_conv_stride "
          f"{args.last_conv_stride}; medians of {args.repeats} runs (x4 at batch 1); "
          + (f"OpenVINO {openvino.__version__}, NNCF {nncf.__version__}" if HAVE_OPENVINO
             else "OpenVINO rows left out: pip install 'bpm[openvino]'"))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bpm-bench-") as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(num_train_ids=12, num_test_ids=2, num_distractors=0,
                                                                 num_junk=0, seed=5))
        folder = world / "bounding_box_train"
        paths = [str(folder / n) for n in list_image_names(folder)]
        print(f"{'net':<24} {'size':<9}{'batch':>6}  {'backend':<26}{'img/s':>9}{'ms/batch':>10}{'x ORT FP32':>12}")
        for net in nets:
            rows += bench_net(net, args, paths, Path(tmp))
        rows += bench_references(args.reference, args)
    print_targets(rows)
    saturates = this_cpu_saturates()
    print_best_format(rows, saturates, openvino_int8_saturates(saturates, isa_cap()))
    if args.versus:
        print_versus(rows, args.versus)
    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share the cores: absolute figures"
          " drop with load; ratios, timed round-robin, much less)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
