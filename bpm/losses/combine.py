"""The training criterion: a weighted sum of re-ID losses, each fed the part of the model output it needs.

Following the BNNeck design (Luo et al. 2019), the metric losses (triplet, centre) see the feature
*before* the neck and the ID loss sees the classifier's logits on the feature *after* it; without
a neck both are the same tensor, which is the original's triplet-only training.

A criterion returns ``(loss, stats)``; ``stats`` is a flat dict of floats that the trainer, the
run log, TensorBoard and the plots show whatever it holds. With the triplet loss alone the stats
are exactly the original's (``loss``, ``precision``, ``satisfy_margin``, ``dist_ap``, ``dist_an``);
with several terms ``loss`` is the total and each term's own loss is ``<term>_loss``.

Distillation (:mod:`bpm.losses.distill`) adds ``distill`` and ``relational`` terms on the retrieval
feature (after the neck), fed the teacher's targets. Samples labelled ``-1`` (unlabelled crops from
``--distill_extra``) are seen by those terms only; the ID, triplet and centre terms skip them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from bpm.losses.center import CenterLoss
from bpm.losses.cross_entropy import CrossEntropyLabelSmooth
from bpm.losses.distill import EmbeddingDistillation, RelationalDistillation
from bpm.losses.triplet import BatchHardTripletLoss

# Gathers (features, labels) from every rank for hard-example mining across the global batch.
Gather = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LossConfig:
    """Which terms the criterion sums, and their settings (a weight of 0 leaves a term out)."""

    triplet_weight: float = 1.0
    margin: float = 0.3
    soft_margin: bool = False
    normalize_feature: bool = False
    id_loss_weight: float = 0.0
    label_smoothing: float = 0.1
    center_loss_weight: float = 0.0
    center_alpha: float = 0.5
    distill_weight: float = 0.0
    relational_weight: float = 0.0
    distill_metric: str = "cosine"

    @property
    def needs_teacher(self) -> bool:
        """Whether a term compares with a teacher's embeddings (:mod:`bpm.distill`)."""
        return self.distill_weight > 0 or self.relational_weight > 0

    @property
    def needs_classes(self) -> bool:
        """Whether the model needs a classifier head over the training identities."""
        return self.id_loss_weight > 0 or self.center_loss_weight > 0


class ReidCriterion(torch.nn.Module):
    """``triplet_weight * triplet + id_loss_weight * ID + center_loss_weight * centre``
    ``+ distill_weight * distill + relational_weight * relational``."""

    def __init__(self, config: LossConfig, num_classes: int = 0, feature_dim: int = 0, teacher_dim: int = 0) -> None:
        super().__init__()
        if config.needs_classes and num_classes <= 0:
            raise ValueError("the ID and centre losses need the number of training identities")
        self.config = config
        self.triplet = (BatchHardTripletLoss(config.margin, config.soft_margin, config.normalize_feature)
                        if config.triplet_weight > 0 else None)
        self.id_loss = CrossEntropyLabelSmooth(config.label_smoothing) if config.id_loss_weight > 0 else None
        self.center = (CenterLoss(num_classes, feature_dim, config.center_alpha)
                       if config.center_loss_weight > 0 else None)
        # The projection head (a training-only parameter) lives here, never in the model.
        self.distill = (EmbeddingDistillation(feature_dim, teacher_dim, config.distill_metric)
                        if config.distill_weight > 0 else None)
        self.relational = RelationalDistillation() if config.relational_weight > 0 else None
        if self.triplet is None and self.id_loss is None and self.center is None and not config.needs_teacher:
            raise ValueError("the criterion has no term: give the triplet, ID or centre loss a positive weight")

    def forward(self, outputs, targets: torch.Tensor, gather: Gather | None = None,
                teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``outputs``: a :class:`bpm.models.reid.ReidOutput`; ``targets``: class indices 0..C-1, or -1 for an
        unlabelled sample; ``teacher``: the teacher's normalised embeddings, one row per sample."""
        terms: list[tuple[str, float, torch.Tensor, dict]] = []
        distill_terms: list[tuple[str, float, torch.Tensor, dict]] = []  # on every sample, unlabelled ones too
        if self.config.needs_teacher:
            if teacher is None:
                raise ValueError("the distillation terms need the teacher's embeddings")
            if self.distill is not None:
                distill_terms.append(("distill", self.config.distill_weight, *self.distill(outputs.features, teacher)))
            if self.relational is not None:
                distill_terms.append(("relational", self.config.relational_weight,
                                      *self.relational(outputs.features, teacher)))
        labelled = targets >= 0
        if not bool(labelled.all()):
            outputs = type(outputs)(*(None if t is None else t[labelled] for t in outputs))
            targets = targets[labelled]
        if self.triplet is not None:
            features, labels = outputs.pre_neck, targets
            if gather is not None:
                features, labels = gather(features, labels)
            terms.append(("triplet", self.config.triplet_weight, *self.triplet(features, labels)))
        if self.id_loss is not None:
            if outputs.logits is None:
                raise ValueError("the ID loss needs a model with a classifier head (num_classes > 0)")
            terms.append(("id", self.config.id_loss_weight, *self.id_loss(outputs.logits, targets)))
        if self.center is not None:
            terms.append(("center", self.config.center_loss_weight, *self.center(outputs.pre_neck, targets)))
        terms += distill_terms
        if len(terms) == 1 and terms[0][1] == 1.0:
            return terms[0][2], terms[0][3]
        total = sum(weight * loss for _name, weight, loss, _stats in terms)
        stats: dict[str, float] = {"loss": float(total.detach())}
        for name, _weight, _loss, term_stats in terms:
            for key, value in term_stats.items():
                stats[f"{name}_loss" if key == "loss" else key] = value
        return total, stats
