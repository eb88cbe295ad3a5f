"""What a checkpoint must carry for an exact resume, checked without training."""
from __future__ import annotations

import random

import numpy as np
import torch
from _runner import make_trainer

from bpm.engine.checkpoint import load_checkpoint, rng_state, set_rng_state


def test_unseeded_run_resumes_with_its_own_sampler_seed(tiny_world, tmp_path):
    """With --set_seed false each process draws a fresh sampler seed; a resume must adopt the saved one."""
    first = make_trainer(tiny_world, tmp_path, "--set_seed", "false")
    first.position.epoch, first.position.step = 1, 2
    first.save_checkpoint()
    second = make_trainer(tiny_world, tmp_path, "--set_seed", "false")
    second.resume()
    assert second.sampler.seed == first.sampler_seed == load_checkpoint(tmp_path / "ckpt.pth")["sampler_seed"]
    assert second.sampler.global_batches(1) == first.sampler.global_batches(1)
    assert (second.position.epoch, second.position.step) == (1, 2)


def test_rng_state_round_trips_python_numpy_and_torch():
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gauss value in Python's state
    saved = rng_state()
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(saved)
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])
