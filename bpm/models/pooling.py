"""Global pooling of the trunk's feature map into one vector per image.

``avg`` is the original's (and the default). ``gem`` is generalised-mean pooling (Radenović et al.,
TPAMI 2018) with a learnable exponent ``p``: p = 1 is average pooling, p -> inf max pooling, and
the network learns where in between retrieval works best (fast-reid's strong baselines use it).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


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


POOLINGS: dict[str, type[nn.Module]] = {"avg": AvgPool, "gem": GeMPool}


def build_pooling(name: str) -> nn.Module:
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; expected one of {', '.join(POOLINGS)}")
    return POOLINGS[name]()
