"""Training throughput and peak memory per opt-level: our Trainer.train_step vs a bare PyTorch loop.

Each (network, level, implementation) runs in its own subprocess, so peak memory is that
configuration's alone: ``ru_maxrss`` on the CPU (tracemalloc does not see torch's allocator),
``torch.cuda.max_memory_allocated`` on CUDA. Both implementations get the same model (same seed),
the same P x K batch of random images on the host every step, and the same triplet loss; the
bare loop is the textbook recipe for the level, written here:

  O0  FP32 forward/backward, Adam step
  O1  torch.autocast + GradScaler (float16 only)
  O3  model cast to the half type, Adam step
O2 has no bare counterpart (FP32 master weights are what the stepper adds). Figures are medians
over timed steps after warm-up; ratios compare configurations measured in the same run.

  python bench/train_speed.py                       # CPU, 256x128, batch 8x4, both backbones
  python bench/train_speed.py --quick               # 128x64, batch 4x4, 3 steps
  python bench/train_speed.py --device cuda --steps 20 --warmup 5 --ids 32 --ims 4
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

LEVELS = ("O0", "O1", "O2", "O3")
BARE_LEVELS = ("O0", "O1", "O3")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--nets", default="mobilenetV2,resnet50")
    p.add_argument("--levels", default=",".join(LEVELS))
    p.add_argument("--amp_dtype", default=None, help="float16 or bfloat16 (default: float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--size", default="256,128", help="input height,width")
    p.add_argument("--ids", type=int, default=8, help="identities per batch (P)")
    p.add_argument("--ims", type=int, default=4, help="images per identity (K)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-bare", dest="bare", action="store_false", help="skip the bare-loop baselines")
    p.add_argument("--quick", action="store_true", help="128x64, batch 4x4, 3 steps: a smoke run")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.ids, args.ims, args.steps, args.warmup = "128,64", 4, 4, 3, 1
    return args


# ---------------------------------------------------------------------------- one configuration

def _trainer_args(args: argparse.Namespace, level: str) -> argparse.Namespace:
    from bpm.cli.switches import add_train_arguments
    from bpm.cli.switches import apply_recipe

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    h, w = args.size.split(",")
    argv = ["-d", "()" if args.device == "cpu" else "(0,)", "--opt-level", level, "--resize_h_w", f"({h}, {w})",
            "--ids_per_batch", str(args.ids), "--ims_per_id", str(args.ims), "--workers", "0",
            "--set_seed", "true", "--log_to_file", "false", "--recipe", "original"]
    if args.amp_dtype:
        argv += ["--amp_dtype", args.amp_dtype]
    parsed = parser.parse_args(argv)
    apply_recipe(parsed)
    return parsed


def _ours(args, net: str, level: str, device):
    """A Trainer on dummy records (its loader is never iterated); the step is Trainer.train_step."""
    from bpm.data.records import ImageRecord
    from bpm.cli.switches import train_config
    from bpm.engine.build import build_training
    from bpm.engine.trainer import Trainer
    from bpm.models.input_spec import input_spec_of_model
    from bpm.models.reid import build_model
    from bpm.precision import PrecisionPolicy

    targs = _trainer_args(args, level)
    policy = PrecisionPolicy.create(level, device, targs.amp_dtype, targs.keep_batchnorm_fp32, targs.loss_scale)
    records = [ImageRecord(f"/nonexistent/{i}.jpg", i % args.ids, 1) for i in range(args.ids * args.ims)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # O3 training warns by design
        model = build_model(net)
        trainer = Trainer(build_training(train_config(targs), policy, model, records,
                                         input_spec=input_spec_of_model(model, targs.resize_h_w)), "/nonexistent")

    def step(images, labels) -> float:
        _stepped, stats = trainer.train_step(images, labels)
        return stats["loss"]

    return step, policy.describe()


def _bare(args, net: str, level: str, device):
    """The textbook loop for the level, with the same model, loss and optimizer settings."""
    import torch

    from bpm.losses.triplet import BatchHardTripletLoss
    from bpm.models.reid import build_model

    half = {"float16": torch.float16, "bfloat16": torch.bfloat16}[
        args.amp_dtype or ("float16" if device.type == "cuda" else "bfloat16")]
    model = build_model(net).to(device)
    if level == "O3":
        model = model.to(half)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=5e-4, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=level == "O1" and half == torch.float16)
    loss_fn = BatchHardTripletLoss(0.3)
    in_dtype = half if level == "O3" else torch.float32

    def step(images, labels) -> float:
        model.train()
        images = images.to(device, in_dtype, non_blocking=device.type == "cuda")
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=half, enabled=level == "O1"):
            features = model(images).pre_neck  # training mode returns ReidOutput; triplet reads the pooled feature
        loss, stats = loss_fn(features, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return stats["loss"]

    return step, f"bare {level}"


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(args: argparse.Namespace) -> dict:
    """``time:NET:LEVEL`` times ours and the bare loop alternately, step by step, so load from other
    processes hits both alike; ``mem:NET:LEVEL:IMPL`` runs one implementation alone for its peak memory."""
    import torch

    mode, net, level, *impl = args.child.split(":")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device == "cpu" else "cuda:0")
    impls = impl if mode == "mem" else ["ours"] + (["bare"] if args.bare and level in BARE_LEVELS else [])
    steps = {}
    for name in impls:
        torch.manual_seed(0)
        steps[name] = (_ours if name == "ours" else _bare)(args, net, level, device)
    h, w = (int(v) for v in args.size.split(","))
    batch = args.ids * args.ims
    images = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(args.ids).repeat_interleave(args.ims)
    if device.type == "cuda":
        images = images.pin_memory()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    losses: dict = {name: [] for name in impls}
    times: dict = {name: [] for name in impls}
    timed = args.steps if mode == "time" else 1
    base_rss = _current_rss_mib()
    for i in range(args.warmup + timed):
        if i == args.warmup:
            base_rss = _current_rss_mib()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        order = impls if i % 2 == 0 else impls[::-1]
        for name in order:
            sync()
            start = time.perf_counter()
            losses[name].append(steps[name][0](images, labels))
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    result = {"net": net, "level": level, "mode": mode}
    for name in impls:
        result[name] = {"label": steps[name][1], "images_per_s": batch / statistics.median(times[name]),
                        "first_loss": losses[name][0], "last_loss": losses[name][-1]}
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["base_mib"] = base_rss
    return result


# ---------------------------------------------------------------------------- driver

def _child(forwarded: list[str], spec: str) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), *forwarded, "--child", spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"{spec}: FAILED\n{proc.stderr.strip()[-2000:]}", flush=True)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return 0
    from bpm.machine import print_machine

    print_machine()
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
    forwarded += ["--size", args.size, "--ids", str(args.ids), "--ims", str(args.ims),
                  "--steps", str(args.steps), "--warmup", str(args.warmup)]
    levels = [lv for lv in args.levels.split(",") if lv]
    memory = "cuda max_memory_allocated" if args.device != "cpu" else "process maxrss (+ growth over pre-step RSS)"
    print(f"device {args.device}, input {args.size.replace(',', 'x')}, batch {args.ids}x{args.ims}, "
          f"median of {args.steps} steps after {args.warmup} warm-up; peak memory: {memory}, one process each")
    for net in args.nets.split(","):
        o0_speed = None
        for level in levels:
            timing = _child(forwarded, f"time:{net}:{level}")
            if timing is None:
                continue
            for impl in ("ours", "bare"):
                if impl not in timing:
                    continue
                row = timing[impl]
                mem = _child(forwarded, f"mem:{net}:{level}:{impl}")
                text = f"{net:<12} {level} {impl:<4} {row['images_per_s']:8.1f} img/s"
                if mem is not None:
                    text += f"  peak {mem['peak_mib']:7.0f} MiB"
                    if "base_mib" in mem:
                        text += f" (+{mem['peak_mib'] - mem['base_mib']:.0f})"
                text += f"  loss {row['first_loss']:.4f}->{row['last_loss']:.4f}"
                if not math.isfinite(row["last_loss"]):
                    text += "  NON-FINITE: steps were skipped, the speed is not a training speed"
                if impl == "bare":
                    text += f"  ours/bare {timing['ours']['images_per_s'] / row['images_per_s']:.3f}x"
                elif level == "O0":
                    o0_speed = row["images_per_s"]
                elif o0_speed:
                    text += f"  vs O0 {row['images_per_s'] / o0_speed:.2f}x"
                print(f"{text}  [{row['label']}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
