from argparse import Namespace

import pytest

from bpm.engine.lr_schedule import exp_decay_lr, lr_at_epoch, staircase_lr


def test_exp_schedule_defaults():
    values = {ep: exp_decay_lr(2e-4, ep, 300, 151) for ep in (1, 150, 151, 300)}
    assert values[1] == values[150] == 2e-4
    assert values[151] == pytest.approx(1.91e-4, rel=2e-3)
    assert values[300] == pytest.approx(2e-7, rel=1e-9)


def test_staircase_is_a_function_of_the_epoch_only():
    assert staircase_lr(1.0, 100, (101, 201), 0.1) == 1.0
    assert staircase_lr(1.0, 101, (101, 201), 0.1) == pytest.approx(0.1)
    assert staircase_lr(1.0, 250, (101, 201), 0.1) == pytest.approx(0.01)


def test_dispatch_by_decay_type():
    args = Namespace(lr_decay_type="staircase", base_lr=2e-4, staircase_decay_at_epochs=(2,),
                     staircase_decay_multiply_factor=0.5, total_epochs=3, exp_decay_at_epoch=151)
    assert lr_at_epoch(args, 2) == pytest.approx(1e-4)
    args.lr_decay_type = "exp"
    assert lr_at_epoch(args, 2) == 2e-4
