"""Global pooling of the trunk's feature map into one vector per image.

``avg`` is the original's (and the default). ``gem`` is generalised-mean pooling (Radenović et al.,
TPAMI 2018) with a learnable exponent ``p``: p = 1 is average pooling, p -> inf max pooling, and
the network learns where in between retrieval works best (fast-reid's strong baselines use it).

Poolings are registered in :data:`POOLINGS` (``--pooling``'s choices) by a decorator on their
builder, ``builder() -> nn.Module`` mapping ``[N, C, h, w]`` to ``[N, C]``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bpm.registry import Registry

POOLINGS: Registry = Registry("pooling", flag="--pooling", package="bpm.models.pooling")


@POOLINGS.register("avg")

class AvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


@POOLINGS.register("gem")
class GeMPool(nn.Module):
    """``mean(clamp(x, eps) ** p) ** (1 / p)`` per channel; computed in FP32 (``x ** 3`` overflows FP16)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        pooled = F.adaptive_avg_pool2d(x.float().clamp(min=self.eps).pow(p), 1).pow(1.0 / p)
        return torch.flatten(pooled, 1).to(x.dtype)


def build_pooling(name: str) -> nn.Module:
    """The pooling registered as ``name``; an unknown name is a one-line error naming --pooling."""
    return POOLINGS.get(name)()
