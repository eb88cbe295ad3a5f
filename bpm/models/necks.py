"""What sits between the pooled feature and the retrieval feature / classifier.

``bnneck`` (Luo et al., "Bag of Tricks", 2019): a BatchNorm1d whose shift is frozen at zero. The
triplet loss works on the feature before it (free to spread in Euclidean space) and the ID loss on
the feature after it (normalised, close to a hypersphere, which softmax prefers); retrieval uses
the normalised one. Without the neck the two losses pull one feature in conflicting ways.
"""
from __future__ import annotations

import torch
from torch import nn


class BNNeck(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)  # no shift: keeps the feature centred for the classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def build_neck(name: str, dim: int) -> nn.Module:
    if name == "none":
        return nn.Identity()
    if name == "bnneck":
        return BNNeck(dim)
    raise ValueError(f"unknown neck {name!r}; expected none or bnneck")
