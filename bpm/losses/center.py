"""Center loss (Wen et al., ECCV 2016): pull each feature towards its identity's centre.

Triplet and ID losses only constrain *relative* distances; the centre term also makes each
identity's cluster compact. The centres are updated with the original paper's rule (a running
step of rate ``alpha`` towards the batch mean of each identity's features) rather than by the
optimizer, so they need no optimizer of their own and no learning rate; they are a buffer saved
with the criterion's state for exact resume.
"""
from __future__ import annotations

import torch

from bpm.losses.term import LossBatch, LossShapes, LossTerm, TermResult, register_loss_term


class CenterLoss(torch.nn.Module):
    """``mean_i ||f_i - c_{y_i}||^2 / 2`` over the batch, centres ``[num_classes, dim]`` updated with rate ``alpha``."""

    def __init__(self, num_classes: int, dim: int, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = alpha
        self.register_buffer("centers", torch.zeros(num_classes, dim))
        self.register_buffer("initialised", torch.zeros(num_classes, dtype=torch.bool))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        features = features.float()
        if self.training:
            self._update_centers(features.detach(), targets)
        loss = 0.5 * (features - self.centers[targets]).pow(2).sum(1).mean()
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def _update_centers(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Wen et al.'s rule: ``c_j -= alpha * sum_{i: y_i=j}(c_j - f_i) / (1 + n_j)``; a class seen
        for the first time starts at its features' mean instead of at zero."""
        classes, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
        sums = torch.zeros(len(classes), features.shape[1], device=features.device).index_add_(0, inverse, features)
        fresh = ~self.initialised[classes]
        self.centers[classes[fresh]] = sums[fresh] / counts[fresh, None]
        self.initialised[classes] = True
        old = self.centers[classes]
        delta = (old * counts[:, None] - sums) / (1 + counts[:, None])
        self.centers[classes] = torch.where(fresh[:, None], old, old - self.alpha * delta)


@register_loss_term("center")
class CenterTerm(CenterLoss, LossTerm):
    """The centre loss on the pooled feature before the neck; centres per training identity (option ``center_alpha``)."""

    weight_switch = "center_loss_weight"
    needs_classes = True
    on_resume = "fixed"  # the centres are trained for it

    @classmethod
    def build(cls, config, shapes: LossShapes) -> "CenterTerm":
        return cls(shapes.num_classes, shapes.feature_dim, config.center_alpha)

    def loss(self, batch: LossBatch) -> TermResult:
        return self(batch.pre_neck, batch.targets)
