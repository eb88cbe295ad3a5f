import math
from argparse import Namespace

import pytest

from bpm.engine.lr_schedule import SCHEDULES, exp_decay_lr, lr_at_epoch, staircase_lr
from bpm.errors import BpmError


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


def test_cosine_with_linear_warmup():
    from bpm.engine.lr_schedule import cosine_lr, warmup_factor_at

    cfg = Namespace(lr_decay_type="cosine", base_lr=1.0, total_epochs=10, warmup_epochs=2, warmup_factor=0.1)
    rates = [lr_at_epoch(cfg, e) for e in range(1, 11)]
    assert rates[0] == pytest.approx(0.1) and rates[1] == pytest.approx(0.55)   # warm-up: 0.1 -> 1 over 2 epochs
    assert rates[2] == pytest.approx(1.0)                                         # cosine starts at the base rate
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] > 0    # then falls, never to 0 in-run
    assert cosine_lr(1.0, 6, 9, start_epoch=1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert warmup_factor_at(3, 2, 0.1) == 1.0 and warmup_factor_at(1, 0, 0.1) == 1.0


def test_warmup_applies_to_every_schedule():
    cfg = Namespace(lr_decay_type="exp", base_lr=2e-4, total_epochs=30, exp_decay_at_epoch=16, warmup_epochs=4,
                    warmup_factor=0.1)
    assert lr_at_epoch(cfg, 1) == pytest.approx(2e-5) and lr_at_epoch(cfg, 5) == pytest.approx(2e-4)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_each_schedule_starts_at_the_base_rate_never_rises_and_takes_the_warmup(name):
    cfg = Namespace(lr_decay_type=name, base_lr=1.0, total_epochs=12, exp_decay_at_epoch=4,
                    staircase_decay_at_epochs=(4, 8), staircase_decay_multiply_factor=0.5, warmup_epochs=0)
    rates = [lr_at_epoch(cfg, e) for e in range(1, 13)]
    assert rates[0] == 1.0 and all(0 < b <= a for a, b in zip(rates, rates[1:]))
    cfg.warmup_epochs, cfg.warmup_factor = 2, 0.1
    assert lr_at_epoch(cfg, 1) == pytest.approx(0.1)


def test_unknown_schedule_is_a_one_line_error():
    with pytest.raises(BpmError, match=r"^--lr_decay_type: unknown LR schedule 'poly'"):
        lr_at_epoch(Namespace(lr_decay_type="poly", base_lr=1.0), 1)
