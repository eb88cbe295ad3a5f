"""Optimizers by name (``--optimizer``): each entry builds a torch optimizer from the training settings.

An entry is ``builder(cfg, params) -> torch.optim.Optimizer`` registered in :data:`OPTIMIZERS` next to
its definition; ``--optimizer``'s choices and the tests' parametrisation read the registry, so a new
optimizer is one decorated function. The learning rate it starts with is overwritten at every epoch
by the schedule (:mod:`bpm.engine.lr_schedule`); a resume pushes ``weight_decay`` (and ``momentum``
where the groups have one) into the restored groups (:func:`bpm.engine.resume_check.apply_to_optimizer`).

Both built-in entries use PyTorch's fused kernels, which do the update arithmetic in FP32 whatever
the weights' dtype. That matters at O3, where the weights themselves are half: the unfused Adam
computes in float16, where its eps (1e-8) rounds to zero, so any weight whose squared gradient
underflows gets 0/0 and the whole network turns NaN within a few steps (seen on an H100 and
reproduced on CPU). It is also one kernel per step instead of one per tensor group on CUDA. A new
entry that trains O3 needs the same.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from bpm.registry import Registry

OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer", flag="--optimizer", package="bpm.engine.optimizers")


@OPTIMIZERS.register("adam")
def adam(cfg, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """Adam with L2 weight decay (the original's choice)."""
    return torch.optim.Adam(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay, fused=True)


@OPTIMIZERS.register("sgd")
def sgd(cfg, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (``--momentum``) and weight decay."""
    return torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, nesterov=True,
                           weight_decay=cfg.weight_decay, fused=True)


def build_optimizer(cfg, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names (``cfg``: a :class:`bpm.engine.train_config.TrainConfig`) over ``params``."""
    return OPTIMIZERS.get(cfg.optimizer)(cfg, params)
