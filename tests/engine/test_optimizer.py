"""--optimizer/--momentum/--base_lr/--weight_decay reach the optimizer (the original's --momentum was dead)."""
import argparse

import pytest
import torch

from bpm.cli.switches import train_config
from bpm.cli.switches import add_train_arguments
from bpm.engine.train_config import TrainConfig
from bpm.engine.optimizers import OPTIMIZERS, build_optimizer
from bpm.errors import BpmError
from bpm.cli.switches import apply_recipe


def args(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    parsed = parser.parse_args(list(argv))
    apply_recipe(parsed)
    return train_config(parsed)


def test_adam_is_the_default_of_both_recipes():
    opt = build_optimizer(args("--recipe", "original"), [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["weight_decay"] == 5e-4
    opt = build_optimizer(args(), [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-3  # softmax: higher than BoT's
    opt = build_optimizer(args("--recipe", "bot"), [torch.nn.Parameter(torch.zeros(2))])
    assert opt.defaults["lr"] == 3.5e-4  # BoT as published


def test_sgd_uses_nesterov_momentum():
    opt = build_optimizer(args("--optimizer", "sgd", "--momentum", "0.8", "--base_lr", "0.01"),
                          [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"] and opt.defaults["lr"] == 0.01


def test_half_precision_weights_stay_finite_when_squared_gradients_underflow():
    """O3 keeps float16 weights: the update must be computed in FP32 or Adam's eps vanishes.

    Gradients of 1e-5 square to 1e-10, below float16's smallest subnormal (6e-8), and zero
    gradients leave both moments at zero; an update done in float16 divides by eps=1e-8 -> 0.
    """
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    opt = build_optimizer(args("--base_lr", "0.01", "--weight_decay", "0"), [weight])
    for _ in range(3):
        weight.grad = torch.tensor([1e-5, 0.0, 1e-3, -1e-3], dtype=torch.float16)
        opt.step()
    assert torch.isfinite(weight).all()
    assert weight[1] == 1  # no gradient, no move
    assert weight[0] < 1 and weight[2] < 1 and weight[3] > 1  # Adam moves ~lr against the gradient's sign


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_moves_the_weights_against_the_gradient(name):
    weight = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(args("--optimizer", name, "--base_lr", "0.01", "--weight_decay", "0"), [weight])
    weight.grad = torch.tensor([1.0, -1.0, 0.0])
    opt.step()
    assert weight[0] < 1 < weight[1] and opt.defaults["lr"] == 0.01


def test_unknown_optimizer_is_a_one_line_error():
    with pytest.raises(BpmError, match=r"^--optimizer: unknown optimizer 'lbfgs'; expected one of adam, sgd"):
        build_optimizer(TrainConfig(optimizer="lbfgs"), [torch.nn.Parameter(torch.zeros(1))])
