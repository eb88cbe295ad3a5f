"""--optimizer/--momentum/--base_lr/--weight_decay reach the optimizer (the original's --momentum was dead)."""
import argparse

import torch

from bpm.config import add_train_arguments
from bpm.engine.trainer import build_optimizer


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(list(argv))


def test_adam_is_the_default():
    opt = build_optimizer(args(), [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["weight_decay"] == 5e-4


def test_sgd_uses_nesterov_momentum():
    opt = build_optimizer(args("--optimizer", "sgd", "--momentum", "0.8", "--base_lr", "0.01"),
                          [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"] and opt.defaults["lr"] == 0.01
