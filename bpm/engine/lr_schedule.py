"""Learning-rate schedules as pure functions of the epoch.

Computing the rate from (epoch, settings) instead of multiplying it step by step keeps it right
after ``--resume`` (the original's staircase schedule compounded wrongly on resume).
Epochs here are 1-based, as in the original's formulas. Any schedule can start with a linear
warm-up (``warmup_epochs``): from ``warmup_factor * base`` at epoch 1 to the schedule's own rate,
which protects ImageNet features and a freshly initialised ID classifier from the first large steps.

Schedules are registered in :data:`SCHEDULES` (``--lr_decay_type``'s choices) by a decorator on a
function ``schedule(cfg, epoch) -> rate`` before warm-up; a new schedule is one decorated function
reading the settings it needs from ``cfg``.
"""
from __future__ import annotations

import math

import torch

from bpm.registry import Registry

SCHEDULES: Registry = Registry("LR schedule", flag="--lr_decay_type", package="bpm.engine.lr_schedule")


def exp_decay_lr(base_lr: float, epoch: int, total_epochs: int, decay_at_epoch: int) -> float:
    """``base`` until ``decay_at_epoch``, then ``base * 0.001 ** ((ep + 1 - start) / (total + 1 - start))``."""
    if epoch < decay_at_epoch:
        return base_lr
    return base_lr * 0.001 ** ((epoch + 1 - decay_at_epoch) / (total_epochs + 1 - decay_at_epoch))


def staircase_lr(base_lr: float, epoch: int, decay_at_epochs: tuple[int, ...], factor: float) -> float:
    """``base * factor ** (number of decay epochs already reached)``."""
    return base_lr * factor ** sum(1 for e in decay_at_epochs if epoch >= e)


def cosine_lr(base_lr: float, epoch: int, total_epochs: int, start_epoch: int = 1) -> float:
    """Half a cosine from ``base`` at ``start_epoch`` down towards 0 after ``total_epochs``."""
    span = max(total_epochs + 1 - start_epoch, 1)
    progress = min(max(epoch - start_epoch, 0) / span, 1.0)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_factor_at(epoch: int, warmup_epochs: int, start_factor: float) -> float:
    """``start_factor`` at epoch 1 rising linearly to 1 at ``warmup_epochs + 1``."""
    if warmup_epochs <= 0 or epoch > warmup_epochs:
        return 1.0
    return start_factor + (1.0 - start_factor) * (epoch - 1) / warmup_epochs


@SCHEDULES.register("exp")
def exp_schedule(cfg, epoch: int) -> float:
    """The original's: constant, then exponential decay to 0.001x from ``exp_decay_at_epoch``."""
    return exp_decay_lr(cfg.base_lr, epoch, cfg.total_epochs, cfg.exp_decay_at_epoch)


@SCHEDULES.register("staircase")
def staircase_schedule(cfg, epoch: int) -> float:
    """Multiplied by ``staircase_decay_multiply_factor`` at each of ``staircase_decay_at_epochs``."""
    return staircase_lr(cfg.base_lr, epoch, tuple(cfg.staircase_decay_at_epochs), cfg.staircase_decay_multiply_factor)


@SCHEDULES.register("cosine")
def cosine_schedule(cfg, epoch: int) -> float:
    """Half a cosine, starting after the warm-up."""
    return cosine_lr(cfg.base_lr, epoch, cfg.total_epochs, start_epoch=_warmup_epochs(cfg) + 1)


def _warmup_epochs(cfg) -> int:
    return int(getattr(cfg, "warmup_epochs", 0) or 0)


def lr_at_epoch(cfg, epoch: int) -> float:
    """Learning rate of 1-based ``epoch`` for the schedule ``lr_decay_type`` names, warm-up applied
    (``cfg``: a :class:`bpm.engine.train_config.TrainConfig` or anything with the same fields)."""
    lr = SCHEDULES.get(cfg.lr_decay_type)(cfg, epoch)
    return lr * warmup_factor_at(epoch, _warmup_epochs(cfg), float(getattr(cfg, "warmup_factor", 0.1)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
