"""Identity (softmax) loss on the training-only classifier head, with label smoothing.

Label smoothing (Szegedy et al. 2016; in re-ID since Luo et al.'s "Bag of Tricks", 2019) keeps the
classifier from growing over-confident on the few hundred training identities, which generalises
better to the unseen test identities. The arithmetic is torch's own ``cross_entropy``; logits are
cast to FP32 first because a log-softmax over hundreds of classes loses digits in FP16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bpm.losses.term import LossBatch, LossShapes, LossTerm, TermResult, register_loss_term


class CrossEntropyLabelSmooth(torch.nn.Module):
    """``cross_entropy(logits, target, label_smoothing=epsilon)``, plus the batch's top-1 accuracy."""

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing epsilon must lie in [0, 1), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = logits.float()
        loss = F.cross_entropy(logits, targets, label_smoothing=self.epsilon)
        with torch.no_grad():
            accuracy = float((logits.argmax(1) == targets).float().mean())
        return loss, {"loss": float(loss.detach()), "id_accuracy": accuracy}


@register_loss_term("id")
class IdTerm(CrossEntropyLabelSmooth, LossTerm):
    """The ID loss on the classifier head's logits (the feature after the neck); option ``--label_smoothing``."""

    weight_switch = "id_loss_weight"
    needs_classes = True
    on_resume = "fixed"  # the ID head is sized and trained for it

    @classmethod
    def build(cls, config, shapes: LossShapes) -> "IdTerm":
        return cls(config.label_smoothing)

    def loss(self, batch: LossBatch) -> TermResult:
        if batch.logits is None:
            raise ValueError("the ID loss needs a model with a classifier head (num_classes > 0)")
        return self(batch.logits, batch.targets)
