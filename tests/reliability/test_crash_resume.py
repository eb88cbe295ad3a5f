"""Crash-safe, exact resume: real training processes killed from outside, then resumed.

The reference is one uninterrupted run (``--workers 0``). Every interrupted run, whatever its
worker count, kill moments and checkpoint interval, must end with bitwise the same weights,
optimizer state and metrics: checkpointing has no side effects, the checkpoint carries every
RNG state, and augmentation depends only on the sampler's per-sample seeds.
"""
from __future__ import annotations

import os
import random
import signal

import pytest
import torch
from _runner import (
    TALLY,
    assert_same_training,
    checkpointed_step,
    final_state,
    finish,
    kill_at_random,
    last_logged_step,
    make_trainer,
    record_loss,
    start,
    train_argv,
    wait_for,
)

from bpm.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

TOTAL_STEPS = 8  # 2 epochs x 4 batches of 4 ids x 2 images on the 16-id tiny world


@pytest.fixture(scope="module")
def straight(tiny_world, tmp_path_factory) -> dict:
    exp_dir = tmp_path_factory.mktemp("straight") / "exp"
    run = start(train_argv(tiny_world, exp_dir), exp_dir, "straight")
    assert finish(run) == 0, run.output()
    return final_state(exp_dir)


@pytest.mark.parametrize("seed, workers", [(0, "0"), (1, "2"), (2, "0")])
def test_sigkill_at_random_points_then_resume_gives_bitwise_the_same_run(tiny_world, tmp_path, straight, seed, workers):
    rng = random.Random(seed)
    exp_dir = tmp_path / "exp"
    argv = train_argv(tiny_world, exp_dir, "--workers", workers)
    kills = 0
    for attempt, mid_write in enumerate((False, True)):
        resume = (exp_dir / "ckpt.pth").is_file()
        run = start(argv + ["--resume", str(resume).lower()], exp_dir, f"attempt{attempt}")
        TALLY.resumed_runs += int(resume)
        kills += kill_at_random(run, rng, TOTAL_STEPS - checkpointed_step(exp_dir), mid_write)
        assert record_loss(exp_dir) <= 1  # at most the step whose checkpoint was being written
    run = start(argv + ["--resume", "true"], exp_dir, "final")
    TALLY.resumed_runs += 1
    assert finish(run) == 0, run.output()
    assert kills >= 1
    assert "Resumed from" in run.output() and ", skipped" not in run.output()
    assert_same_training(straight, final_state(exp_dir))


def test_sigterm_and_ctrl_c_stop_after_the_step_with_a_checkpoint_then_resume_exactly(tiny_world, tmp_path, straight):
    exp_dir = tmp_path / "exp"
    # No periodic mid-epoch checkpoints: the only mid-epoch checkpoints come from the signal path.
    argv = train_argv(tiny_world, exp_dir, "--workers", "2", "--ckpt_every_steps", "0")
    stops = [
        ("SIGTERM", lambda run: run.proc.send_signal(signal.SIGTERM)),  # e.g. a scheduler's preemption
        ("SIGINT", lambda run: os.killpg(run.proc.pid, signal.SIGINT)),  # Ctrl-C: the whole group, workers too
    ]
    for attempt, (name, send) in enumerate(stops):
        run = start(argv + ["--resume", str(attempt > 0).lower()], exp_dir, name)
        TALLY.resumed_runs += int(attempt > 0)
        assert wait_for(run, lambda: run.steps_done() >= 2, "two steps"), run.output()
        send(run)
        TALLY.fault(f"{name} (graceful stop)")
        assert finish(run) == 2, run.output()
        lines = [line for line in run.output().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and f"stopped by signal {name}" in lines[0], run.output()
        assert "resume with --resume true" in lines[0] and "Traceback" not in run.output()
        ckpt = load_checkpoint(exp_dir / "ckpt.pth")
        assert ckpt["global_step"] == last_logged_step(exp_dir)  # the current step finished and was saved
        assert 0 < ckpt["step"] < 4 or ckpt["global_step"] % 4 == 0
    run = start(argv + ["--resume", "true"], exp_dir, "final")
    TALLY.resumed_runs += 1
    assert finish(run) == 0, run.output()
    assert_same_training(straight, final_state(exp_dir))


class _Crash(Exception):
    """Stands in for the process dying right after a checkpoint reached the disk."""


@pytest.mark.parametrize("crash_after", [6])  # mid-epoch 2: after an epoch boundary too
def test_mid_epoch_resume_at_o2_restores_master_weights_and_loss_scaler_exactly(tiny_world, tmp_path, crash_after):
    switches = ("--opt-level", "O2", "--loss-scale", "dynamic", "--ckpt_every_steps", "1")
    straight = make_trainer(tiny_world, tmp_path / "straight", *switches)
    straight.fit()

    crashed = make_trainer(tiny_world, tmp_path / "crashed", *switches)
    save = crashed.save_checkpoint

    def save_then_die():
        save()
        if crashed.position.global_step == crash_after:
            raise _Crash

    crashed.save_checkpoint = save_then_die
    with pytest.raises(_Crash):
        crashed.fit()
    TALLY.fault("crash after a mid-epoch checkpoint (in-process, O2)")
    resumed = make_trainer(tiny_world, tmp_path / "crashed", *switches)
    resumed.resume()
    TALLY.resumed_runs += 1
    resumed.fit()

    assert resumed.stepper.scale == straight.stepper.scale
    for a, b in zip(straight.stepper.master_params, resumed.stepper.master_params):
        assert torch.equal(a, b)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
