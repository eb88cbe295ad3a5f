"""What sits between the pooled feature and the retrieval feature / classifier.

``bnneck`` (Luo et al., "Bag of Tricks", 2019): a BatchNorm1d whose shift is frozen at zero. The
triplet loss works on the feature before it (free to spread in Euclidean space) and the ID loss on
the feature after it (normalised, close to a hypersphere, which softmax prefers); retrieval uses
the normalised one. Without the neck the two losses pull one feature in conflicting ways.

Necks are registered in :data:`NECKS` (``--neck``'s choices) by a decorator on their builder,
``builder(feature_dim) -> nn.Module`` keeping the size; a new neck is one decorated class or function.
"""
from __future__ import annotations

import torch
from torch import nn

from bpm.registry import Registry

NECKS: Registry = Registry("neck", flag="--neck", package="bpm.models.necks")


@NECKS.register("none")
def no_neck(dim: int) -> nn.Module:
    """The original's: retrieval uses the pooled trunk feature itself."""
    return nn.Identity()


@NECKS.register("bnneck")
class BNNeck(nn.Module):
    normalize_at_test = True  # its output is made for cosine comparison: L2-normalised at test by default

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)  # no shift: keeps the feature centred for the classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def build_neck(name: str, dim: int) -> nn.Module:
    """The neck registered as ``name`` for ``dim``-wide features; an unknown name is a one-line error naming --neck."""
    return NECKS.get(name)(dim)


def normalizes_at_test(name: str) -> bool:
    """Whether retrieval features after neck ``name`` are L2-normalised at test by default: the neck's
    builder declares it with a ``normalize_at_test`` attribute (unknown names, e.g. in old files: no)."""
    return name in NECKS and bool(getattr(NECKS.get(name), "normalize_at_test", False))
