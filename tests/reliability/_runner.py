"""Drive ``python -m bpm train`` in a subprocess and inject faults into it (SIGKILL, SIGTERM, SIGINT).

Why subprocesses: a SIGKILL cannot be caught, so the only honest test of crash safety is a real
process killed from outside, followed by a fresh process that resumes from what is on disk.
Kill moments are drawn from a seeded ``random.Random``, but the assertions hold for ANY moment,
so the tests stay deterministic in outcome even though the exact kill instant varies.

Every fault is recorded in :data:`TALLY`, which the suite prints at the end (the README's counts).
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bpm.cli.switches import train_config
from bpm.engine.checkpoint import CKPT_NAME, load_checkpoint
from bpm.models.input_spec import input_spec_of_model

TIMEOUT_S = 240.0
POLL_S = 0.005


@dataclass
class Tally:
    """Counts for the README: faults injected, runs resumed, work lost."""

    faults: dict[str, int] = field(default_factory=dict)
    resumed_runs: int = 0
    kills_mid_write: int = 0
    torn_checkpoints: int = 0
    steps_lost_max: int = 0
    steps_lost_total: int = 0
    stale_tmp_bytes_max: int = 0

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


TALLY = Tally()


@atexit.register
def _write_tally() -> None:
    """With ``BPM_RELIABILITY_TALLY=<file>``, leave the counts there for the README."""
    target = os.environ.get("BPM_RELIABILITY_TALLY")
    if target and (TALLY.faults or TALLY.resumed_runs):
        Path(target).write_text(json.dumps(dataclasses.asdict(TALLY), indent=2, sort_keys=True) + "\n")


def train_argv(world: Path, exp_dir: Path, *extra: str) -> list[str]:
    """``python -m bpm train`` for a few quick CPU steps on the tiny world, checkpointing every step."""
    return [sys.executable, "-m", "bpm", "train", *train_switches(world, exp_dir, "--ckpt_every_steps", "1", *extra)]


def train_switches(world: Path, exp_dir: Path, *extra: str) -> list[str]:
    """The switches of tests/conftest.py ``train_args``: 2 epochs of 4 steps on 64x32 images, seeded."""
    return [
        "-d", "()", "--dataset", "market1501", "--data_root", str(world), "--exp_dir", str(exp_dir),
        "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--total_epochs", "2",
        "--workers", "0", "--set_seed", "true", "--log_to_file", "false", "--rerank", "false", "--steps_per_log", "0",
        "--net_pretrained_path", "none", "--recipe", "original", *extra,
    ]


def one_epoch(world: Path, exp_dir: Path, *extra: str) -> list[str]:
    """``bpm train`` argv for one epoch of the tiny world (in-process runs through :func:`bpm.cli.main`)."""
    return ["train", *train_switches(world, exp_dir, "--total_epochs", "1", *extra)]


def cli_error(capsys, argv: list[str]) -> str:
    """Run ``bpm`` in-process, expect exit 2 and exactly one ``error: ...`` line; return that line."""
    from bpm.cli import main

    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@dataclass
class Run:
    proc: subprocess.Popen
    exp_dir: Path
    log: Path
    steps_before: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def steps_done(self) -> int:
        """Training steps this process completed (its own lines of ``train_log.jsonl``)."""
        return logged_steps(self.exp_dir) - self.steps_before


def _step_lines(exp_dir: Path) -> list[dict]:
    path = Path(exp_dir) / "train_log.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}") and '"kind": "step"' in line]


def logged_steps(exp_dir: Path) -> int:
    """Step lines in ``train_log.jsonl`` (steps repeated after a resume appear twice, by design)."""
    path = Path(exp_dir) / "train_log.jsonl"
    return path.read_text().count('{"kind": "step"') if path.is_file() else 0


def last_logged_step(exp_dir: Path) -> int:
    """The global step of the last completed training step anyone logged."""
    lines = _step_lines(exp_dir)
    return int(lines[-1]["step"]) if lines else 0


def start(argv: list[str], exp_dir: Path, tag: str) -> Run:
    """Start a training process in its own session (so a group signal reaches its loader workers too)."""
    exp_dir = Path(exp_dir)
    log = exp_dir.parent / f"{exp_dir.name}.{tag}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Run(proc, exp_dir, log, logged_steps(exp_dir))


def finish(run: Run) -> int:
    """Wait for the process (bounded), reaping its process group afterwards."""
    try:
        return run.proc.wait(timeout=TIMEOUT_S)
    finally:
        reap(run)


def reap(run: Run) -> None:
    """Kill whatever is left of the process group this helper started (e.g. orphaned loader workers)."""
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait(timeout=30)
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tmp_files(exp_dir: Path) -> list[Path]:
    return sorted(Path(exp_dir).glob(f".{CKPT_NAME}.*.tmp"))


def _tmp_bytes(exp_dir: Path) -> int:
    """Bytes in checkpoint temp files (a file may vanish between listing and sizing: the rename won)."""
    total = 0
    for path in _tmp_files(exp_dir):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def wait_for(run: Run, predicate, what: str) -> bool:
    """Poll until ``predicate()`` holds; False if the process ended first."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if predicate():
            return True
        if run.proc.poll() is not None:
            return False
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}; output:\n{run.output()}")


def kill_at_random(run: Run, rng: random.Random, steps_left: int, mid_write: bool) -> bool:
    """SIGKILL the run at a random moment after a random step; True if it was killed before finishing.

    ``mid_write`` waits for a checkpoint temp file to exist and kills at once, i.e. while
    ``torch.save`` is writing; otherwise the kill lands at a random instant within a step.
    """
    after = rng.randrange(0, max(1, steps_left - 1))
    if not wait_for(run, lambda: run.steps_done() >= after, f"step {after}"):
        return False
    if mid_write:
        previous = run.exp_dir / CKPT_NAME
        target = rng.uniform(0.05, 0.95) * (previous.stat().st_size if previous.is_file() else 1)
        if not wait_for(run, lambda: _tmp_bytes(run.exp_dir) >= target, "a checkpoint half written"):
            return False
    else:
        time.sleep(rng.uniform(0.0, 1.5))
    if run.proc.poll() is not None:
        return False
    writing = _tmp_bytes(run.exp_dir) > 0
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(timeout=30)
    reap(run)
    TALLY.fault("SIGKILL mid checkpoint write" if mid_write else "SIGKILL at a random instant")
    TALLY.kills_mid_write += int(writing)
    record_loss(run.exp_dir)
    return True


def record_loss(exp_dir: Path) -> int:
    """Check the checkpoint left on disk is whole; count completed (logged) steps it does not hold."""
    path = Path(exp_dir) / CKPT_NAME
    held = 0
    if path.is_file():
        try:
            held = int(load_checkpoint(path)["global_step"])
        except Exception:
            TALLY.torn_checkpoints += 1
            raise
    lost = max(0, last_logged_step(exp_dir) - held)
    TALLY.steps_lost_max = max(TALLY.steps_lost_max, lost)
    TALLY.steps_lost_total += lost
    TALLY.stale_tmp_bytes_max = max(TALLY.stale_tmp_bytes_max, _tmp_bytes(exp_dir))
    return lost


def checkpointed_step(exp_dir: Path) -> int:
    path = Path(exp_dir) / CKPT_NAME
    return int(load_checkpoint(path)["global_step"]) if path.is_file() else 0


def final_state(exp_dir: Path) -> dict:
    """What must match bitwise between an interrupted-and-resumed run and a straight one."""
    ckpt = load_checkpoint(Path(exp_dir) / CKPT_NAME)
    results = json.loads((Path(exp_dir) / "results.json").read_text())
    return {"ckpt": ckpt, "results": results}


def assert_same_training(a: dict, b: dict) -> None:
    """Model weights and buffers, optimizer state, position and evaluation metrics are identical."""
    ca, cb = a["ckpt"], b["ckpt"]
    assert (ca["ep"], ca["step"], ca["global_step"]) == (cb["ep"], cb["step"], cb["global_step"])
    ma, mb = ca["state_dicts"][0], cb["state_dicts"][0]
    assert ma.keys() == mb.keys()
    for key in ma:
        assert torch.equal(ma[key], mb[key]), f"model tensor {key} differs"
    oa, ob = ca["state_dicts"][1], cb["state_dicts"][1]
    assert oa["param_groups"] == ob["param_groups"]
    for pid, state in oa["state"].items():
        for name, value in state.items():
            other = ob["state"][pid][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), f"optimizer {pid}.{name} differs"
    # "versions" is provenance (it names the git commit, which may move while the suite runs), not a result.
    drop = lambda results: {k: v for k, v in results.items() if k != "versions"}  # noqa: E731
    assert drop(a["results"]) == drop(b["results"])


def make_trainer(world: Path, exp_dir: Path, *extra: str):
    """An in-process :class:`Trainer` on the tiny world (same switches as tests/conftest.py ``train_args``)."""
    from train_helpers import train_args

    from bpm.data.datasets import build_dataset
    from bpm.engine.build import build_training
    from bpm.engine.trainer import Trainer, seed_everything
    from bpm.models.reid import build_model
    from bpm.precision import PrecisionPolicy

    args = train_args(world, exp_dir, *extra)
    seed_everything(args.seed)
    dataset = build_dataset("market1501", str(world))
    policy = PrecisionPolicy.create(args.opt_level, "cpu", args.amp_dtype, args.keep_batchnorm_fp32, args.loss_scale)
    model = build_model(args.net, args.last_conv_stride)
    return Trainer(build_training(train_config(args), policy, model, dataset.train,
                                  input_spec=input_spec_of_model(model, args.resize_h_w)), exp_dir)
