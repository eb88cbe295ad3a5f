"""Training-only heads: they exist to shape the embedding and are never part of the released model.

The ID classifier has one output per *training* identity, which means nothing for the unseen
identities of a test set; inference, export and released weights therefore leave it out.
"""
from __future__ import annotations

from torch import nn

HEAD_PREFIX = "head."


def build_id_head(dim: int, num_classes: int) -> nn.Linear:
    """A bias-free linear classifier (BNNeck's choice: the neck already centres the feature),
    initialised with a small normal as in the strong baselines so early logits stay near uniform."""
    head = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(head.weight, std=0.001)
    return head
