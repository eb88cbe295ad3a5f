"""What per-step teacher inference costs against the cached teacher targets (seconds per training step).

Both modes train the same student on the same batches of a generated synthetic world, in this one
run on this one machine: ``cached`` looks the teacher's embeddings of the un-augmented images up
(computed once, before timing; that one-off cost is printed too), ``per_step`` runs the teacher on
each augmented batch (``--teacher_per_step true``). A plain ID-only run is the baseline. Prints the
machine line, the median seconds per step of each mode and the ratios.

    python bench/distill_cost.py --teacher ../shared/teachers/osnet_x0_25_msmt17.onnx \\
        --teacher_input 256x128,rgb,imagenet --steps 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bpm.cli.switches import add_train_arguments, apply_recipe, train_config  # noqa: E402
from bpm.data.datasets import build_dataset  # noqa: E402
from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.engine.distillation import distill_targets  # noqa: E402
from bpm.distill.teacher import open_teacher  # noqa: E402
from bpm.engine.build import build_training  # noqa: E402
from bpm.engine.trainer import Trainer, seed_everything  # noqa: E402
from bpm.machine import machine_line  # noqa: E402
from bpm.models.input_spec import input_spec_of_model  # noqa: E402
from bpm.models.reid import build_model  # noqa: E402
from bpm.precision import PrecisionPolicy  # noqa: E402


def _endless(trainer: Trainer):
    """The trainer's batches, epoch after epoch (a small world's epoch has only a few)."""
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch)
        yield from trainer.loader
        epoch += 1


def step_times(world: Path, exp_dir: Path, args: argparse.Namespace, switches: list[str]) -> tuple[list[float], float]:
    """Seconds of each timed step (after one warm-up step), and the seconds the targets took to prepare."""
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    h, w = args.resize_h_w
    parsed = parser.parse_args(["-d", "()", "--dataset", "market1501", "--data_root", str(world), "--exp_dir",
                                str(exp_dir), "--resize_h_w", f"({h}, {w})", "--workers", str(args.workers),
                                "--set_seed", "true", "--net_pretrained_path", "none", "--recipe", "softmax", *switches])
    apply_recipe(parsed)
    config = train_config(parsed)
    seed_everything(1)
    dataset = build_dataset("market1501", str(world))
    model = build_model(args.net, pooling=parsed.pooling, neck=parsed.neck, num_classes=dataset.num_train_ids)
    input_spec = input_spec_of_model(model, parsed.resize_h_w)
    start = time.perf_counter()
    targets = None
    if config.teacher:
        targets = distill_targets(open_teacher(config.teacher, config.teacher_input), config, dataset.train, exp_dir,
                                  input_spec)
    prepare = time.perf_counter() - start
    trainer = Trainer(build_training(config, PrecisionPolicy.create("O0", "cpu"), model, dataset.train,
                                     input_spec=input_spec, distill=targets),
                      exp_dir)
    times = []
    batches = _endless(trainer)
    for _ in range(args.steps + 1):
        images, labels, _camids, indices = next(batches)
        start = time.perf_counter()
        trainer.train_step(images, labels, indices)
        times.append(time.perf_counter() - start)
    return times[1:], prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--teacher_input", default="")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--net", default="mobilenetV2")
    parser.add_argument("--resize_h_w", type=lambda t: tuple(int(v) for v in t.strip("()").split(",")),
                        default=(128, 64))
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    print(machine_line())
    print(f"torch threads {torch.get_num_threads()}, student {args.net} {args.resize_h_w[0]}x{args.resize_h_w[1]}, "
          f"batch 32x4, {args.steps} timed steps")
    teacher = ["--teacher", args.teacher, "--teacher_input", args.teacher_input, "--distill_weight", "1",
               "--relational_weight", "10"]
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(num_train_ids=40, num_test_ids=4, num_distractors=0,
                                                                 num_junk=0, seed=3))
        rows = {}
        for name, switches in (("baseline (no teacher)", []), ("cached", teacher),
                               ("per_step", [*teacher, "--teacher_per_step", "true"])):
            times, prepare = step_times(world, Path(tmp) / name.split()[0], args, switches)
            rows[name] = statistics.median(times)
            print(f"{name:22s} median {rows[name]:.3f} s/step (min {min(times):.3f}, max {max(times):.3f})"
                  + (f"; targets prepared in {prepare:.1f}s" if switches else ""))
    base = rows["baseline (no teacher)"]
    print(f"cached / baseline {rows['cached'] / base:.2f}x, per_step / baseline {rows['per_step'] / base:.2f}x, "
          f"per_step / cached {rows['per_step'] / rows['cached']:.2f}x")


if __name__ == "__main__":
    main()
