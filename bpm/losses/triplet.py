"""Batch-hard triplet loss (Hermans et al. 2017), always computed in FP32.

Under mixed precision the embeddings may arrive in half precision; distances between nearby
embeddings lose most of their digits in FP16, so the loss casts to FP32 first, as the
original did.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bpm.losses.term import LossBatch, LossShapes, LossTerm, TermResult, register_loss_term


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``[m, n]``; clamped before sqrt so the gradient stays finite."""
    squared = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return squared.clamp(min=1e-12).sqrt()


def hard_example_mining(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor: distance to its farthest positive and to its nearest negative."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    dist_ap = dist.masked_fill(~same, float("-inf")).max(1).values
    dist_an = dist.masked_fill(same, float("inf")).min(1).values
    return dist_ap, dist_an


class BatchHardTripletLoss(torch.nn.Module):
    """``relu(d_ap - d_an + margin)`` averaged over anchors, or ``softplus(d_ap - d_an)`` with ``soft_margin``.

    Returns the loss and what the original logged per step (``loss``, ``precision``: d_an > d_ap,
    ``satisfy_margin``, ``dist_ap``, ``dist_an``) as plain floats.
    """

    def __init__(self, margin: float = 0.3, soft_margin: bool = False, normalize_feature: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.soft_margin = soft_margin
        self.normalize_feature = normalize_feature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        features = features.float()
        if self.normalize_feature:
            features = F.normalize(features, dim=1)
        dist_ap, dist_an = hard_example_mining(euclidean_dist(features, features), labels)
        gap = dist_ap - dist_an
        loss = F.softplus(gap).mean() if self.soft_margin else F.relu(gap + self.margin).mean()
        with torch.no_grad():
            stats = {
                "loss": float(loss),
                "precision": float((dist_an > dist_ap).float().mean()),
                "satisfy_margin": float((dist_an > dist_ap + self.margin).float().mean()),
                "dist_ap": float(dist_ap.mean()),
                "dist_an": float(dist_an.mean()),
            }
        return loss, stats


@register_loss_term("triplet")
class TripletTerm(BatchHardTripletLoss, LossTerm):
    """The triplet loss on the pooled feature before the neck, mined over every rank's batch with
    ``--gather_for_mining``; options ``--margin``, ``--soft_margin``, ``normalize_feature``."""

    weight_switch = "triplet_weight"
    on_resume = ""  # stateless

    @classmethod
    def build(cls, config, shapes: LossShapes) -> "TripletTerm":
        return cls(config.margin, config.soft_margin, config.normalize_feature)

    def loss(self, batch: LossBatch) -> TermResult:
        features, labels = batch.pre_neck, batch.targets
        if batch.gather is not None:
            features, labels = batch.gather(features, labels)
        return self(features, labels)
