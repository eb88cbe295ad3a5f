"""The accuracy-speed frontier an edge user chooses a re-ID model from, measured in one run.

For each backbone: train on a ``folder`` data set with the real ``bpm train`` (through
``bench/real_accuracy.py``), export it with the real ``bpm export`` (the default command, and again
with ``--qat_epochs``), then time the FP32 and INT8 ONNX files with ONNX Runtime at the trained
input size and at 256x128. One table, one row per backbone:

FP32 mAP / rank-1 / mINP, INT8 mAP (default export, and the route it kept: post-training or
fine-tuned, with any layers left in FP32; ``--qat_epochs`` export), FP32 and INT8 images/s at
batch 32 and batch-1 latency (ms) at both sizes, parameters and MACs (read off the FP32 ONNX
graph, so every row, ready-made or ours, is counted the same way) and training s/epoch. Where
OpenVINO and NNCF are installed (``pip install 'bpm[openvino]'``; ``--openvino false`` leaves them
out), the default export also writes ``openvino_int8``, and its mAP and images/s at the trained size
join the row: on CPUs with VNNI it is the fastest verified format. The plot places each row at its
fastest verified format.

``--reference NAME=FILE.onnx@HxW,rgb|bgr,imagenet|tf|unit`` adds a ready-made ONNX re-ID model,
evaluated as downloaded on the same query/gallery (the input spec after ``@``: input size, colour
order, and normalisation: ImageNet mean/std, ``tf`` = (x - 127) / 128, ``unit`` = x / 255).

    python bench/frontier.py                                  # MobileNet-V2 and EfficientNet-Lite0, defaults
    python bench/frontier.py --backbone lite1="--net efficientnet_lite1 --net_pretrained_path FILE"
    python bench/frontier.py --trained mnv2=expt_res/run/ckpt.pth --qat_epochs 0 \\
        --reference osnet=osnet_x0_25.onnx@256x128,rgb,imagenet --plot frontier.png

Defaults: ``../shared/data/cuhk03_detected`` and the ImageNet files in ``../shared/weights`` (beside
the checkout) when present; any folder-layout data set works. Speed is timed round-robin across all
files of a row (medians; ratios are the robust figures on a shared machine).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any OpenMP runtime starts (see infer_speed.py)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper, shape_inference  # noqa: E402
from PIL import Image  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import real_accuracy  # noqa: E402

from bpm.data.datasets.market1501 import load_split_folders  # noqa: E402
from bpm.evaluation import evaluate  # noqa: E402
from bpm.models.onnx_graph import session_options_for  # noqa: E402
from bpm.machine import describe_machine, machine_line  # noqa: E402

SHARED = BENCH.parents[1] / "shared"
DEFAULT_DATA = SHARED / "data" / "cuhk03_detected"
WEIGHTS = SHARED / "weights"
DEFAULT_BACKBONES = {
    "mobilenet_v2": ("mobilenetV2", WEIGHTS / "mobilenet_v2_imagenet_tonylins.pth"),
    "efficientnet_lite0": ("efficientnet_lite0", WEIGHTS / "efficientnet-lite0-57934424.pth"),
}
SPEED_SIZE = (256, 128)
HAVE_OPENVINO = all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))

#: Normalisations a ready-made model may expect: (mean, std) on RGB in 0..1.
NORMALISATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tf": ((127 / 255,) * 3, (128 / 255,) * 3),
    "unit": ((0.0,) * 3, (1.0,) * 3),
}


# ------------------------------------------------------------------------------- ONNX graph cost

def _constants_folded(model: onnx.ModelProto) -> onnx.ModelProto:
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bpm-cost-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def onnx_cost(path: Path) -> tuple[int, int]:
    """(parameters, multiply-accumulates per image) of an ONNX graph's Conv / Gemm / MatMul nodes.

    Counted from the graph itself (shape inference at batch 1), so a ready-made model and ours are
    measured by the same rule. Parameters are all floating-point initialisers (BatchNorm is folded
    into the convolutions by the exporter, so it counts as conv bias). Constants are folded first
    (ONNX Runtime's basic optimisations): EfficientNet-Lite's "SAME" padding is computed in the graph,
    and shape inference cannot follow a Pad whose amounts are not constants.
    """
    model = onnx.load(str(path))
    for value in model.graph.input:  # batch 1 for the MAC count
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(_constants_folded(model))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    params = sum(a.size for a in inits.values() if np.issubdtype(a.dtype, np.floating))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output, *model.graph.input)}
    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out or 0 in out:
            continue
        if node.op_type == "Conv" and node.input[1] in inits:
            weight = inits[node.input[1]].shape  # [C_out, C_in/groups, kh, kw]
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in inits:
            weight = inits[node.input[1]].shape  # MatMul / Gemm: [K, N]; Gemm with transB: [N, K]
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            macs += int(np.prod(out)) * int(weight[1] if trans_b else weight[0])
    return int(params), int(macs)


# ----------------------------------------------------------------------------------------- speed

def onnx_input(path: Path) -> tuple[str, tuple[int, int]]:
    """The graph's input name and its fixed (H, W)."""
    value = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
    return value.name, (dims[2], dims[3])


def graph_runner(path: Path, threads: int) -> tuple[Callable[[np.ndarray], object], tuple[int, int]]:
    """(a function of an NCHW batch, the graph's (H, W)): ONNX Runtime for ``.onnx``, OpenVINO for an IR."""
    if path.suffix == ".xml":
        from bpm.models.openvino_graph import OpenVinoModel

        model = OpenVinoModel(path, threads=threads)
        return model, tuple(model.spec.resize_h_w)
    import onnxruntime as ort

    input_name, size = onnx_input(path)
    session = ort.InferenceSession(str(path), session_options_for(path, threads), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {input_name: x}), size


def time_sessions(files: dict[str, Path], threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per file: images/s at batch 32 and ms per image at batch 1, timed round-robin, medians."""
    runners = {name: graph_runner(path, threads) for name, path in files.items()}
    result: dict[str, dict[str, float]] = {name: {} for name in files}
    rng = np.random.default_rng(0)
    for batch, rounds in ((32, repeats), (1, repeats * 8)):
        feeds = {name: rng.standard_normal((batch, 3, *size), dtype=np.float32) for name, (_r, size) in runners.items()}
        times: dict[str, list[float]] = {name: [] for name in files}
        for name, (run, _size) in runners.items():  # warm-up
            for _ in range(2):
                run(feeds[name])
        for _ in range(rounds):
            for name, (run, _size) in runners.items():
                start = time.perf_counter()
                run(feeds[name])
                times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            if batch == 32:
                result[name]["images_per_s_b32"] = batch / statistics.median(t)
            else:
                result[name]["latency_ms_b1"] = 1000 * statistics.median(t)
    return result


# ------------------------------------------------------------------------- ready-made references

@dataclass(frozen=True)
class ReferenceSpec:
    """How a ready-made ONNX model wants its input: size, colour order, normalisation."""

    name: str
    path: Path
    size: tuple[int, int]
    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def parse_reference(text: str) -> ReferenceSpec:
    """``NAME=FILE.onnx@HxW,rgb|bgr,imagenet|tf|unit`` -> :class:`ReferenceSpec` (one-line errors)."""
    name, eq, rest = text.partition("=")
    path, at, spec = rest.rpartition("@")
    if not eq or not name or not at or not path:
        raise SystemExit(f"--reference {text!r}: expected NAME=FILE.onnx@HxW,rgb|bgr,imagenet|tf|unit")
    parts = [p.strip().lower() for p in spec.split(",")]
    if len(parts) != 3 or parts[1] not in ("rgb", "bgr") or parts[2] not in NORMALISATIONS:
        raise SystemExit(f"--reference {text!r}: input spec {spec!r} must be HxW,rgb|bgr,{'|'.join(NORMALISATIONS)}")
    try:
        h, w = (int(v) for v in parts[0].split("x"))
    except ValueError:
        raise SystemExit(f"--reference {text!r}: input size {parts[0]!r} must be HxW, e.g. 256x128") from None
    if not Path(path).is_file():
        raise SystemExit(f"--reference {name}: {path} not found")
    mean, std = NORMALISATIONS[parts[2]]
    return ReferenceSpec(name, Path(path), (h, w), parts[1] == "bgr", mean, std)


def reference_input(paths: list[str], spec: ReferenceSpec) -> np.ndarray:
    """Images as the reference model expects them: resized (bilinear), normalised, NCHW float32."""
    size = (spec.size[1], spec.size[0])
    arrays = [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32) / 255
              for p in paths]
    batch = (np.stack(arrays) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.bgr:
        batch = batch[..., ::-1]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


def evaluate_reference(spec: ReferenceSpec, data_root: Path, threads: int) -> dict:
    """mAP / rank-1 / mINP of a ready-made model on the data set's query/gallery (cosine distance)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(spec.path), session_options_for(spec.path, threads), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    test = load_split_folders(data_root, "folder", "train", "query", "gallery", "folder").test_sets[0]

    def embed(records) -> np.ndarray:
        paths = [r.path for r in records]
        feats = np.concatenate([session.run(None, {input_name: reference_input(paths[i:i + 32], spec)})[0]
                                for i in range(0, len(paths), 32)]).reshape(len(paths), -1)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    q, g = embed(test.query), embed(test.gallery)
    result = evaluate(1 - q @ g.T, [r.pid for r in test.query], [r.pid for r in test.gallery],
                      [r.camid for r in test.query], [r.camid for r in test.gallery])
    return {"mAP": result["mAP"], "rank1": float(result["cmc"][0]), "mINP": result["mINP"]}


# ------------------------------------------------------------------------------- bpm's own rows

def bpm_export(weights: Path, out: Path, switches: list[str]) -> tuple[int, dict]:
    """Run ``bpm export`` in a fresh interpreter; (exit code, its export_report.json or {})."""
    argv = [sys.executable, "-m", "bpm", "export", "--weights", str(weights), "--out", str(out), *switches]
    print("$", shlex.join(argv[2:]), flush=True)
    code = subprocess.call(argv, cwd=BENCH.parent)
    report = out / "export_report.json"
    return code, json.loads(report.read_text()) if report.is_file() else {}


def onnx_row(report: dict, fmt: str) -> dict:
    """One format's row of an export report ({} when the format is missing)."""
    return next((r for r in report.get("formats", []) if r.get("format") == fmt), {})


def int8_route(report: dict) -> str:
    """How the export made its INT8 file, from its report: ``post-training`` or ``fine-tuned``, with the
    layers it kept in FP32 (the default export picks the cheapest route that passes; the table says which)."""
    int8 = report.get("int8") or {}
    route = int8.get("int8_path", "")
    layers = len(int8.get("fp32_layers") or [])
    return f"{route}, {layers} FP32" if route and layers else route


def find_onnx(folder: Path, int8: bool, suffix: str = ".onnx") -> Path | None:
    """The exported FP32 or INT8 ONNX file (or, with ``suffix=".xml"``, OpenVINO IR) in ``folder``
    (refused files included: speed only)."""
    files = sorted(p for p in folder.glob(f"*{suffix}") if ("int8" in p.name) == int8 and "fp16" not in p.name
                   and "onnx16" not in p.name)
    return files[0] if files else None


def measure_backbone(name: str, ckpt: Path, train_row: dict | None, args) -> dict:
    exp = ckpt.parent
    data = ["--dataset", "folder", "--data_root", str(args.data_root), "--threads", str(args.threads)]
    row = {"name": name, "weights": str(ckpt), "kind": "bpm"}
    formats = "onnx,onnx_int8" + (",openvino_int8" if args.openvino else "")
    code, report = bpm_export(ckpt, exp / "frontier_export", ["--formats", formats, *data])
    row["export_exit"] = code
    row["fp32"] = onnx_row(report, "onnx")
    row["int8"] = onnx_row(report, "onnx_int8")
    if args.openvino:
        row["ov_int8"] = onnx_row(report, "openvino_int8")
    row["int8_route"] = int8_route(report)
    if args.qat_epochs:
        code, report = bpm_export(ckpt, exp / "frontier_export_qat", ["--formats", "onnx_int8", "--qat_epochs",
                                                                        str(args.qat_epochs), *data])
        row["qat_exit"], row["int8_qat"] = code, onnx_row(report, "onnx_int8")
    code, _report = bpm_export(ckpt, exp / "frontier_speed", [
        "--formats", "onnx,onnx_int8", "--resize_h_w", f"({SPEED_SIZE[0]}, {SPEED_SIZE[1]})",
        "--calib_images", str(args.data_root / "train"), "--evaluate", "false"])
    files = {"fp32": find_onnx(exp / "frontier_export", False), "int8": find_onnx(exp / "frontier_export", True),
             "fp32_256x128": find_onnx(exp / "frontier_speed", False),
             "int8_256x128": find_onnx(exp / "frontier_speed", True),
             "ov_int8": find_onnx(exp / "frontier_export", True, ".xml") if args.openvino else None}
    files = {k: v for k, v in files.items() if v is not None}
    row["speed"] = time_sessions(files, args.threads, args.repeats)
    if "fp32" in files:
        row["params"], row["macs"] = onnx_cost(files["fp32"])
        row["input"] = "x".join(map(str, onnx_input(files["fp32"])[1]))
    row["s_per_epoch"] = train_row["s_per_epoch"] if train_row else None
    # FP32 accuracy: bpm train's own evaluation (with mINP) when trained here or when the run's
    # results.json lies beside the checkpoint (--trained), else the FP32 ONNX check (no mINP).
    train_row = train_row or results_beside(ckpt)
    row["accuracy"] = ({k: train_row[k] for k in ("mAP", "rank1", "mINP")} if train_row
                       else {k: row["fp32"].get(k) for k in ("mAP", "rank1")})
    return row


def results_beside(ckpt: Path) -> dict | None:
    """mAP / rank-1 / mINP from the ``results.json`` that ``bpm train`` wrote beside ``ckpt``, if any."""
    try:
        results = json.loads((ckpt.parent / "results.json").read_text())
        return {"mAP": float(results["mAP"]), "rank1": float(results["cmc"]["1"]), "mINP": float(results["mINP"]),
                "s_per_epoch": None}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measure_reference(spec: ReferenceSpec, args) -> dict:
    row = {"name": spec.name, "weights": str(spec.path), "kind": "reference",
           "input": f"{spec.size[0]}x{spec.size[1]}"}
    row["accuracy"] = row["fp32"] = evaluate_reference(spec, args.data_root, args.threads)
    row["speed"] = time_sessions({"fp32": spec.path}, args.threads, args.repeats)
    row["params"], row["macs"] = onnx_cost(spec.path)
    return row


# ---------------------------------------------------------------------------------------- output

def _pct(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "–"


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "–"


def format_table(rows: list[dict], title: str) -> str:
    openvino = any("ov_int8" in r for r in rows)
    ov_header = "OpenVINO INT8 mAP | OpenVINO INT8 img/s | " if openvino else ""
    lines = [title, "", "| model | input | FP32 mAP | rank-1 | mINP | INT8 mAP | INT8 route | INT8 mAP tuned | FP32 img/s | "
             f"INT8 img/s | {ov_header}FP32 ms b1 | INT8 ms b1 | FP32 img/s 256x128 | INT8 img/s 256x128 | params M | "
             "MMACs | s/epoch |", "|" + "---|" * (19 if openvino else 17)]
    for r in rows:
        s = r["speed"]
        fp32, int8, qat = r["accuracy"], r.get("int8", {}), r.get("int8_qat", {})
        ov = (f"{_pct(r.get('ov_int8', {}).get('mAP'))} | "
              f"{_num(s.get('ov_int8', {}).get('images_per_s_b32'), '.0f')} | ") if openvino else ""
        lines.append(
            f"| {r['name']} | {r.get('input', '')} | {_pct(fp32.get('mAP'))} | {_pct(fp32.get('rank1'))} | "
            f"{_pct(fp32.get('mINP'))} | {_pct(int8.get('mAP'))} | {r.get('int8_route') or '–'} | "
            f"{_pct(qat.get('mAP'))} | "
            f"{_num(s.get('fp32', {}).get('images_per_s_b32'), '.0f')} | "
            f"{_num(s.get('int8', {}).get('images_per_s_b32'), '.0f')} | {ov}"
            f"{_num(s.get('fp32', {}).get('latency_ms_b1'), '.2f')} | "
            f"{_num(s.get('int8', {}).get('latency_ms_b1'), '.2f')} | "
            f"{_num(s.get('fp32_256x128', {}).get('images_per_s_b32'), '.0f')} | "
            f"{_num(s.get('int8_256x128', {}).get('images_per_s_b32'), '.0f')} | "
            f"{_num(r.get('params', 0) / 1e6, '.2f')} | {_num(r.get('macs', 0) / 1e6, '.0f')} | "
            f"{_num(r.get('s_per_epoch'), '.1f')} |")
    return "\n".join(lines)


#: The formats a row can be deployed as: (key in the row's ``speed`` and report, label). FP32 is verified by
#: the row's own accuracy; an INT8 file only when the export's check passed it.
PLOT_FORMATS = (("fp32", "FP32"), ("int8", "INT8"), ("ov_int8", "OpenVINO INT8"))


def fastest_verified(row: dict) -> tuple[str, float, float] | None:
    """(format label, images/s at batch 32, mAP) of the row's fastest format that was verified, or None."""
    places = []
    for key, label in PLOT_FORMATS:
        if "images_per_s_b32" not in row["speed"].get(key, {}):
            continue
        if key == "fp32":
            m = row["accuracy"].get("mAP")
        else:
            report = row.get(key, {})
            m = report.get("mAP") if report.get("passed") else None
        if m is not None:
            places.append((label, row["speed"][key]["images_per_s_b32"], m))
    return max(places, key=lambda place: place[1], default=None)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """mAP against images/s (the fastest verified format of each row, batch 32), log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for r in rows:
        place = fastest_verified(r)
        if place is None:
            continue
        fmt, x, m = place
        marker = "s" if r["kind"] == "reference" else "o"
        ax.scatter([x], [100 * m], marker=marker)
        ax.annotate(f"{r['name']}\n({fmt}, {r.get('input', '')})", (x, 100 * m), fontsize=8,
                    textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers: the axis spans less than a decade
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.25, y=0.2)  # room for the labels
    ax.set_xlabel("images/s (fastest verified format, batch 32)")
    ax.set_ylabel("mAP (%)")
    ax.set_title(title.replace(" | python", "\npython", 1), fontsize=8)  # the machine line, on two lines
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_root", type=Path, default=DEFAULT_DATA, help="folder layout: train/ query/ gallery/")
    parser.add_argument("--backbone", action="append", default=[],
                        help="NAME=SWITCHES: bpm train switches of one row (at least --net); repeatable "
                             "(default: MobileNet-V2 and EfficientNet-Lite0 from ImageNet files beside the checkout)")
    parser.add_argument("--trained", action="append", default=[],
                        help="NAME=CKPT: a row from an already trained checkpoint (no training, no s/epoch)")
    parser.add_argument("--reference", action="append", default=[],
                        help="NAME=FILE.onnx@HxW,rgb|bgr,imagenet|tf|unit: a ready-made ONNX model, as downloaded")
    parser.add_argument("--resize_h_w", type=lambda t: tuple(int(v) for v in t.strip("()").split(",")),
                        default=(128, 64), help="training input 'H,W'")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--qat_epochs", type=int, default=4, help="the fine-tuned INT8 column (0: skip it)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=7, help="timed batch-32 runs per file (x8 at batch 1)")
    parser.add_argument("--openvino", type=lambda t: {"true": True, "false": False}[t.lower()], default=HAVE_OPENVINO,
                        help="also export, check and time openvino_int8 (true|false; default: whether openvino and "
                             "nncf are installed)")
    parser.add_argument("-d", "--device", default="()", help="bpm's -d for training")
    parser.add_argument("--out", type=Path, default=Path("expt_res/frontier"), help="experiment folders")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    parser.add_argument("--plot", type=Path, default=None, help="write mAP vs images/s as a PNG here")
    args = parser.parse_args(argv)
    if not (args.data_root / "query").is_dir():
        parser.error(f"--data_root {args.data_root}: expected a folder-layout data set (train/, query/, gallery/)")
    args.reference = [parse_reference(r) for r in args.reference]
    if not args.backbone and not args.trained:
        args.backbone = [f"{name}=--net {net} --net_pretrained_path {weights if weights.is_file() else 'imagenet'}"
                         for name, (net, weights) in DEFAULT_BACKBONES.items()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = describe_machine()
    print(machine_line(machine), flush=True)
    rows = []
    train_args = argparse.Namespace(**{**vars(args), "net": "mobilenetV2", "net_pretrained_path": "none",
                                       "test_folder": []})
    for spec in args.backbone:
        name, _eq, switches = spec.partition("=")
        train_row = real_accuracy.run_variant(name, shlex.split(switches), train_args, args.out)
        rows.append(measure_backbone(name, args.out / name / "ckpt.pth", train_row, args))
    for spec in args.trained:
        name, _eq, ckpt = spec.partition("=")
        if not Path(ckpt).is_file():
            raise SystemExit(f"--trained {spec}: {ckpt} not found")
        rows.append(measure_backbone(name, Path(ckpt), None, args))
    rows += [measure_reference(spec, args) for spec in args.reference]
    h, w = args.resize_h_w
    title = (f"{args.data_root.name}: trained at {h}x{w}, {args.epochs} epochs, seed {args.seed}; held-out identities, "
             f"single query, no re-ranking, % ; ONNX Runtime {args.threads} threads\n{machine_line(machine)}")
    print()
    print(format_table(rows, title))
    if args.plot:
        plot(rows, args.plot, machine_line(machine))
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "reference"},
            "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
