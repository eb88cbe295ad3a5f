"""Accuracy on real pedestrians: train with a named recipe and budget, evaluate on held-out identities.

Every accuracy claim in the README comes from this script. It runs the real commands (``bpm train``
on a ``folder``-layout data set, then ``bpm test`` on any further test-only folders: cross-domain
evaluation), so it measures exactly what a user gets, and prints one row per variant: mAP,
rank-1/5/10, mINP (single query, no re-ranking), train seconds, seconds per epoch, images/s.

    python bench/real_accuracy.py                                  # bot, defaults below
    python bench/real_accuracy.py --variant original="--recipe original" --variant bot="--recipe bot"
    python bench/real_accuracy.py --data_root DIR --test_folder OTHER_DIR --json out.json
    python bench/real_accuracy.py --variant bot="--recipe bot" \
        --variant distill="--recipe distill --teacher ../shared/teachers/osnet_x0_25_msmt17.onnx \
                           --teacher_input 256x128,rgb,imagenet --teacher_cache expt_res/teacher_cache_osnet"

Defaults: ``../shared/data/cuhk03_detected`` (beside the checkout), MobileNet-V2 from
``../shared/weights/mobilenet_v2_imagenet_tonylins.pth`` when that file exists (else torchvision's
ImageNet weights), 128x64 input, 30 epochs, seed 1, 2 workers: the CPU budget. A variant is
``NAME=SWITCHES`` (extra ``bpm train`` switches, shell-quoted); ``--epochs 0`` measures the
initial weights. Works on any folder layout data set; ``../shared`` is only the default.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpm.cli import main as bpm_main  # noqa: E402
from bpm.machine import describe_machine, machine_line  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_DATA = SHARED / "data" / "cuhk03_detected"
DEFAULT_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_tonylins.pth"
EPOCH_LINE = re.compile(r"^Ep (\d+), ([0-9.]+)s,", re.M)


class _Tee(io.TextIOBase):
    """Keep what a command prints (to read its per-epoch times) while still showing it."""

    def __init__(self, stream) -> None:
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.buffer.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _run(argv: list[str]) -> tuple[int, str, float]:
    tee = _Tee(sys.stdout)
    start = time.perf_counter()
    with contextlib.redirect_stdout(tee):
        code = bpm_main(argv)
    return code, tee.buffer.getvalue(), time.perf_counter() - start


def _metrics(results: dict) -> dict:
    first = next(iter(results["test_sets"].values()))["single_query"]
    cmc = first["cmc"]
    return {"mAP": first["mAP"], "rank1": cmc["1"], "rank5": cmc["5"], "rank10": cmc["10"], "mINP": first["mINP"]}


def run_variant(name: str, switches: list[str], args: argparse.Namespace, out_root: Path) -> dict:
    exp_dir = out_root / name
    h, w = args.resize_h_w
    argv = ["train", "-d", args.device, "--dataset", "folder", "--data_root", str(args.data_root),
            "--net", args.net, "--net_pretrained_path", args.net_pretrained_path, "--resize_h_w", f"({h}, {w})",
            "--total_epochs", str(args.epochs), "--set_seed", "true", "--seed", str(args.seed),
            "--workers", str(args.workers), "--rerank", "false", "--steps_per_log", "0", "--log_to_file", "false",
            "--exp_dir", str(exp_dir), *switches]
    code, output, wall = _run(argv)
    if code != 0:
        raise SystemExit(f"variant {name}: bpm train exited with {code}")
    epochs = [float(s) for _ep, s in EPOCH_LINE.findall(output)]
    steps = sum(1 for line in (exp_dir / "train_log.jsonl").read_text().splitlines() if '"kind": "step"' in line) \
        if (exp_dir / "train_log.jsonl").is_file() else 0
    config = json.loads((exp_dir / "config.json").read_text())
    batch = config["ids_per_batch"] * config["ims_per_id"]
    train_s = sum(epochs)
    row = {"variant": name, "switches": " ".join(switches), "recipe": config["recipe"], **_metrics(
        json.loads((exp_dir / "results.json").read_text())), "train_s": train_s, "wall_s": wall,
        "s_per_epoch": train_s / len(epochs) if epochs else 0.0,
        "images_per_s": steps * batch / train_s if train_s else 0.0, "cross_domain": {}}
    for folder in args.test_folder:
        code, _output, _wall = _run(["test", "-d", args.device, "--dataset", "folder", "--data_root", folder,
                                     "--net", args.net, "--resize_h_w", f"({h}, {w})", "--workers", str(args.workers),
                                     "--rerank", "false", "--log_to_file", "false",
                                     "--model_weight_file", str(exp_dir / "ckpt.pth"),
                                     "--exp_dir", str(exp_dir / f"test_{Path(folder).name}")])
        if code != 0:
            raise SystemExit(f"variant {name}: bpm test on {folder} exited with {code}")
        row["cross_domain"][folder] = _metrics(json.loads(
            (exp_dir / f"test_{Path(folder).name}" / "results.json").read_text()))
    return row


def format_table(rows: list[dict], title: str) -> str:
    lines = [title, "", "| variant | mAP | rank-1 | rank-5 | rank-10 | mINP | train s | s/epoch | img/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {100 * r['mAP']:.1f} | {100 * r['rank1']:.1f} | {100 * r['rank5']:.1f} | "
                     f"{100 * r['rank10']:.1f} | {100 * r['mINP']:.1f} | {r['train_s']:.0f} | {r['s_per_epoch']:.1f} | "
                     f"{r['images_per_s']:.0f} |")
        for folder, m in r["cross_domain"].items():
            lines.append(f"| {r['variant']} on {Path(folder).name} | {100 * m['mAP']:.1f} | {100 * m['rank1']:.1f} | "
                         f"{100 * m['rank5']:.1f} | {100 * m['rank10']:.1f} | {100 * m['mINP']:.1f} | | | |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_root", type=Path, default=DEFAULT_DATA, help="folder layout: train/ query/ gallery/")
    parser.add_argument("--test_folder", action="append", default=[],
                        help="a further test-only folder (query/ + gallery/) to evaluate each model on; repeatable")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=SWITCHES: extra bpm train switches for one row; repeatable (default: bot=)")
    parser.add_argument("--net", default="mobilenetV2")
    parser.add_argument("--net_pretrained_path", default=str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file()
                        else "imagenet")
    parser.add_argument("--resize_h_w", type=lambda t: tuple(int(v) for v in t.strip("()").split(",")),
                        default=(128, 64), help="'H,W'")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-d", "--device", default="()", help="bpm's -d: '()' CPU, '(0,)' GPU 0")
    parser.add_argument("--out", type=Path, default=Path("expt_res/real_accuracy"), help="experiment folders")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    args = parser.parse_args(argv)
    if not (args.data_root / "query").is_dir():
        parser.error(f"--data_root {args.data_root}: expected a folder-layout data set (train/, query/, gallery/)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = describe_machine()
    print(machine_line(machine))
    variants = [v.partition("=") for v in (args.variant or ["bot=--recipe bot"])]
    rows = [run_variant(name, shlex.split(switches), args, args.out) for name, _eq, switches in variants]
    h, w = args.resize_h_w
    title = (f"{args.data_root.name}: {args.net} from {Path(args.net_pretrained_path).name}, {h}x{w}, "
             f"{args.epochs} epochs, seed {args.seed}; held-out identities, single query, no re-ranking, "
             f"mAP/CMC/mINP in %\n{machine_line(machine)}")
    print()
    print(format_table(rows, title))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
