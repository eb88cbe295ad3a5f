"""Distillation terms: learn from a teacher's embeddings (:mod:`bpm.distill` provides them, L2-normalised).

- :class:`EmbeddingDistillation` pulls each student embedding, through a training-only linear
  projection to the teacher's size, towards the teacher's: ``1 - cos`` (``cosine``), or the squared
  distance of the projected embedding to the unit-length target (``l2``, which also fixes its
  length). The projection exists only when the sizes differ; with equal sizes the student matches
  the teacher's coordinates directly. It lives in the criterion, never in the model, so exported
  graphs and released weights do not contain it; its weights are in the checkpoint's criterion
  state and its moments in the optimizer's, so a resume is exact.
- :class:`RelationalDistillation` matches the batch's cosine-similarity matrix to the teacher's
  (mean squared difference over the pairs i != j, as relational KD, Park et al. CVPR 2019, does
  with distances): it transfers who looks like whom, needs no projection, and is blind to any
  rotation between the two embedding spaces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bpm.losses.term import LossBatch, LossShapes, LossTerm, TermResult, register_loss_term

METRICS = ("cosine", "l2")

#: Which student feature the terms distil: the pooled trunk feature, *before* the neck. After a
#: BNNeck, training-mode batch normalisation centres every feature over the batch, so the batch's
#: mean pairwise cosine is ~0 and a bias-free projection keeps it so, while a teacher's embeddings
#: (OSNet's, after a ReLU: non-negative) have a mean pairwise cosine of ~0.5 (0.48 for
#: OSNet-x0.25 on CUHK03). Neither term can then be met, and on real data their pull stopped the ID
#: loss from learning at all (docs/results/accuracy.md). The pooled trunk feature of a ReLU network
#: is non-negative like the teacher's; the ID loss keeps the BNNeck feature to itself, as BoT keeps
#: the triplet loss on the pre-neck feature for the same kind of reason.
DISTILLED_FEATURE = "pre_neck"


class EmbeddingDistillation(torch.nn.Module):
    """``mean_i (1 - cos(P s_i, t_i))`` or ``mean_i ||P s_i - t_i||^2``; ``P`` a bias-free linear map when sizes differ."""

    def __init__(self, student_dim: int, teacher_dim: int, metric: str = "cosine") -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"distillation metric: expected one of {METRICS}, got {metric!r}")
        if teacher_dim <= 0:
            raise ValueError("embedding distillation needs the teacher's embedding size")
        self.metric = metric
        self.projection = (torch.nn.Linear(student_dim, teacher_dim, bias=False)
                           if student_dim != teacher_dim else None)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        projected = student.float()
        if self.projection is not None:
            projected = self.projection(projected)
        target = F.normalize(teacher.float().to(projected.device), dim=1)
        cosine = F.cosine_similarity(projected, target, dim=1)
        if self.metric == "cosine":
            loss = (1 - cosine).mean()
        else:
            loss = (projected - target).pow(2).sum(1).mean()
        return loss, {"loss": float(loss.detach()), "distill_cosine": float(cosine.detach().mean())}


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of a batch, ``[n, n]``."""
    unit = F.normalize(features.float(), dim=1)
    return unit @ unit.t()


class RelationalDistillation(torch.nn.Module):
    """``mean_{i != j} (cos(s_i, s_j) - cos(t_i, t_j))^2`` over the batch."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        n = student.shape[0]
        if n < 2:
            zero = student.float().sum() * 0
            return zero, {"loss": 0.0}
        diff = similarity_matrix(student) - similarity_matrix(teacher.to(student.device))
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=diff.device)
        loss = diff[off_diagonal].pow(2).mean()
        return loss, {"loss": float(loss.detach())}


@register_loss_term("distill")
class DistillTerm(EmbeddingDistillation, LossTerm):
    """Embedding distillation of the pooled trunk feature (before the neck; see :data:`DISTILLED_FEATURE`),
    on every sample (unlabelled crops too); option ``--distill_metric``. Its projection head is a
    criterion parameter, optimised with the model."""

    weight_switch = "distill_weight"
    labelled_only = False
    needs_teacher = True

    @classmethod
    def build(cls, config, shapes: LossShapes) -> "DistillTerm":
        return cls(shapes.feature_dim, shapes.teacher_dim, config.distill_metric)

    def loss(self, batch: LossBatch) -> TermResult:
        return self(getattr(batch, DISTILLED_FEATURE), batch.teacher)


@register_loss_term("relational")
class RelationalTerm(RelationalDistillation, LossTerm):
    """Relational distillation of the pooled trunk feature (before the neck; see :data:`DISTILLED_FEATURE`),
    on every sample (unlabelled crops too)."""

    weight_switch = "relational_weight"
    on_resume = ""  # stateless
    labelled_only = False
    needs_teacher = True

    def loss(self, batch: LossBatch) -> TermResult:
        return self(getattr(batch, DISTILLED_FEATURE), batch.teacher)
