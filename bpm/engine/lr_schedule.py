"""The original's learning-rate schedules as pure functions of the epoch.

Computing the rate from (epoch, settings) instead of multiplying it step by step keeps it right
after ``--resume`` (the original's staircase schedule compounded wrongly on resume).
Epochs here are 1-based, as in the original's formulas.
"""
from __future__ import annotations

import torch


def exp_decay_lr(base_lr: float, epoch: int, total_epochs: int, decay_at_epoch: int) -> float:
    """``base`` until ``decay_at_epoch``, then ``base * 0.001 ** ((ep + 1 - start) / (total + 1 - start))``."""
    if epoch < decay_at_epoch:
        return base_lr
    return base_lr * 0.001 ** ((epoch + 1 - decay_at_epoch) / (total_epochs + 1 - decay_at_epoch))


def staircase_lr(base_lr: float, epoch: int, decay_at_epochs: tuple[int, ...], factor: float) -> float:
    """``base * factor ** (number of decay epochs already reached)``."""
    return base_lr * factor ** sum(1 for e in decay_at_epochs if epoch >= e)


def lr_at_epoch(args, epoch: int) -> float:
    """Learning rate of 1-based ``epoch`` for the schedule chosen by ``--lr_decay_type``."""
    if args.lr_decay_type == "exp":
        return exp_decay_lr(args.base_lr, epoch, args.total_epochs, args.exp_decay_at_epoch)
    return staircase_lr(args.base_lr, epoch, tuple(args.staircase_decay_at_epochs), args.staircase_decay_multiply_factor)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
