"""DDP scaling: training steps/s and images/s for world size 1, 2, ... on one machine.

Strong scaling: the global P x K batch is fixed, each of N ranks takes P/N identities, so
images/s at world N over images/s at world 1, divided by N, is the scaling efficiency. Every
world size is measured in the same run (same machine, same load), each step time is the
median over the timed steps, and the ratio is against the world-1 figure of this run.

CPU (gloo), the default:
    .venv/bin/python bench/ddp_scaling.py --world_sizes 1,2
GPUs (nccl), one process per GPU id:
    .venv/bin/python bench/ddp_scaling.py -d '(0,1,2,3)' --world_sizes 1,2,4 --net resnet50 \
        --resize_h_w '(256, 128)' --ids_per_batch 32 --ims_per_id 4 --opt-level O2
Images are decoded outside the timed region (``--workers 0``). On CPU each rank gets one
thread (``--threads``; several OpenMP threads per rank on a busy machine measure contention,
not scaling), and gloo's all-reduce of the whole gradient runs on the same cores, so
efficiency well below 1 is expected there: the CPU run checks the machinery, the GPU run
measures scaling. The GPU command also prints the scaling efficiency per world size.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bpm.cli.switches import train_config
from bpm import distributed
from bpm.cli.switches import add_train_arguments, parse_tuple
from bpm.cli.switches import apply_recipe
from bpm.data.datasets import build_dataset
from bpm.data.synthetic import WorldConfig, generate_world
from bpm.engine.build import build_training
from bpm.engine.trainer import Trainer, seed_everything
from bpm.models.input_spec import input_spec_of_model
from bpm.models.reid import build_model
from bpm.precision import PrecisionPolicy
from bpm.machine import print_machine


def measure(payload: dict) -> int:
    """One rank: build the trainer as ``bpm train`` does, time ``steps`` train steps after warm-up."""
    ctx = distributed.init(payload["device_ids"], 600.0)
    if ctx.device.type == "cpu":  # one core per rank by default: the CPU analogue of one GPU per rank
        torch.set_num_threads(payload["threads"] or max(1, (os.cpu_count() or 1) // ctx.local_world_size))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--recipe", "original", *payload["train_args"]])
    apply_recipe(args)
    seed_everything(args.seed)
    policy = PrecisionPolicy.create(args.opt_level, ctx.device, args.amp_dtype, args.keep_batchnorm_fp32,
                                    args.loss_scale)
    records = build_dataset("market1501", payload["world"]).train
    with tempfile.TemporaryDirectory() as exp_dir:
        model = build_model(args.net, args.last_conv_stride)
        parts = build_training(train_config(args), policy, model, records, ctx,
                               input_spec=input_spec_of_model(model, args.resize_h_w))
        trainer = Trainer(parts, Path(exp_dir))
        times = []
        batches = iter(trainer.loader)
        for step in range(payload["warmup"] + payload["steps"]):
            images, labels, _camids, _index = next(batches)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_step(images, labels)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= payload["warmup"]:
                times.append(time.perf_counter() - start)
    if ctx.is_main:
        Path(payload["out"]).write_text(str(statistics.median(times)))
    distributed.teardown(ctx)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--device_ids", type=parse_tuple, default=(), help="GPU ids, '()' for CPU ranks")
    parser.add_argument("--world_sizes", default="1,2")
    parser.add_argument("--net", default="mobilenetV2")
    parser.add_argument("--resize_h_w", default="(64, 32)")
    parser.add_argument("--ids_per_batch", type=int, default=8)
    parser.add_argument("--ims_per_id", type=int, default=4)
    parser.add_argument("--opt-level", dest="opt_level", default="O0")
    parser.add_argument("--gather_for_mining", default="false")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank (0: cores / world size)")
    args = parser.parse_args()
    print_machine()
    worlds = [int(w) for w in args.world_sizes.split(",")]
    h, w = parse_tuple(args.resize_h_w)
    steps_needed = args.warmup + args.steps
    num_ids = max(args.ids_per_batch * steps_needed, 16)
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(
            num_train_ids=num_ids, num_test_ids=4, num_distractors=0, num_junk=0, image_height=int(h),
            image_width=int(w), min_cameras_per_id=2, max_cameras_per_id=2, max_images_per_id_camera=3))
        train_args = ["-d", "()", "--net", args.net, "--resize_h_w", args.resize_h_w, "--ids_per_batch",
                      str(args.ids_per_batch), "--ims_per_id", str(args.ims_per_id), "--opt-level", args.opt_level,
                      "--gather_for_mining", args.gather_for_mining, "--workers", "0", "--set_seed", "true",
                      "--steps_per_log", "0"]
        batch = args.ids_per_batch * args.ims_per_id
        print(f"{args.net} {args.resize_h_w}, global batch {batch} ({args.ids_per_batch} x {args.ims_per_id}), "
              f"{args.opt_level}, {'GPU ids ' + str(args.device_ids) if args.device_ids else 'CPU (gloo)'}, "
              f"median of {args.steps} steps after {args.warmup} warm-up")
        baseline = None
        for size in worlds:
            ids = tuple(args.device_ids[:size]) if args.device_ids else ()
            payload = {"device_ids": ids, "train_args": train_args, "world": str(world),
                       "out": str(Path(tmp) / f"w{size}.txt"), "steps": args.steps, "warmup": args.warmup,
                       "threads": args.threads}
            distributed.spawn_local(measure, payload, size)  # world 1 too: same start-up and thread setup
            step_s = float(Path(payload["out"]).read_text())
            rate = batch / step_s
            baseline = baseline or rate
            print(f"world {size}: {1 / step_s:7.2f} steps/s, {rate:8.1f} images/s, speed-up {rate / baseline:5.2f}x, "
                  f"efficiency {rate / baseline / size:5.1%}")


if __name__ == "__main__":
    main()
