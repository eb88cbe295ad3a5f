"""The training criterion: the weighted sum of the registered loss terms (:mod:`bpm.losses.term`) that have a weight.

Following the BNNeck design (Luo et al. 2019), the metric losses (triplet, centre) see the feature
*before* the neck and the ID loss sees the classifier's logits on the feature *after* it; without
a neck both are the same tensor, which is the original's triplet-only training. Each term picks its
tensor from the :class:`~bpm.losses.term.LossBatch`.

A criterion returns ``(loss, stats)``; ``stats`` is a flat dict of floats that the trainer, the
run log, TensorBoard and the plots show whatever it holds. With one term at weight 1 (the triplet
loss alone: the original's training) the stats are that term's own (``loss``, ``precision``,
``satisfy_margin``, ``dist_ap``, ``dist_an``); with several, ``loss`` is the total and each term's
own loss is ``<term>_loss``.

Samples labelled ``-1`` (unlabelled crops from ``--distill_extra``) are seen only by the terms that
are not ``labelled_only`` (the distillation terms, :mod:`bpm.losses.distill`); those are computed
first, on the whole batch, and summed after the others. Terms are summed in registration order
(:mod:`bpm.losses` imports the built-in ones in the original's order: triplet, ID, centre, distill,
relational), so the total is the same float sum as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import torch

from bpm.losses.term import LOSS_TERMS, Gather, LossBatch, LossShapes, LossTerm


@dataclass(frozen=True)
class LossConfig:
    """Which terms the criterion sums, and their settings (a weight of 0 leaves a term out).

    The built-in terms' weights and options are fields (their switches are the original's);
    ``weights`` holds the weight of any other registered term, by term name.
    """

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
    weights: Mapping[str, float] = field(default_factory=dict)

    def weight_of(self, term: type[LossTerm]) -> float:
        """The weight of ``term``: its field when it has one, else its entry in :attr:`weights` (default 0)."""
        if term.weight_switch in _FIELDS:
            return float(getattr(self, term.weight_switch))
        return float(self.weights.get(term.name, 0.0))

    def active_terms(self) -> list[tuple[type[LossTerm], float]]:
        """``(term class, weight)`` of every registered term with a positive weight, in registration order."""
        terms = [LOSS_TERMS.get(name) for name in LOSS_TERMS.names()]
        return [(term, self.weight_of(term)) for term in terms if self.weight_of(term) > 0]

    @property
    def needs_teacher(self) -> bool:
        """Whether a term compares with a teacher's embeddings (:mod:`bpm.distill`)."""
        return any(term.needs_teacher for term, _ in self.active_terms())

    @property
    def needs_classes(self) -> bool:
        """Whether the model needs a classifier head over the training identities."""
        return any(term.needs_classes for term, _ in self.active_terms())


_FIELDS = frozenset(f.name for f in fields(LossConfig)) - {"weights"}


def field_switches() -> frozenset[str]:
    """The weight switches that are :class:`LossConfig` fields (the built-in terms'; declared in :mod:`bpm.cli.switches`)."""
    return _FIELDS


class ReidCriterion(torch.nn.Module):
    """``sum_t weight_t * term_t`` over the registered terms with a positive weight.

    Each term is a submodule named after it (``center.centers``, ``distill.projection.weight`` in
    the criterion's state_dict, which the checkpoint keeps for an exact resume).
    """

    def __init__(self, config: LossConfig, num_classes: int = 0, feature_dim: int = 0, teacher_dim: int = 0) -> None:
        super().__init__()
        active = config.active_terms()
        with_classes = [term.name for term, _ in active if term.needs_classes]
        if with_classes and num_classes <= 0:
            raise ValueError(f"the loss terms {', '.join(with_classes)} need the number of training identities")
        self.config = config
        shapes = LossShapes(num_classes, feature_dim, teacher_dim)
        self.weights: dict[str, float] = {}
        for term, weight in active:
            self.add_module(term.name, term.build(config, shapes))
            self.weights[term.name] = weight
        if not active:
            raise ValueError("the criterion has no term: give the triplet, ID or centre loss a positive weight")

    def term(self, name: str) -> LossTerm | None:
        """The active term called ``name``, or None when its weight is 0."""
        return self._modules.get(name) if name in self.weights else None  # type: ignore[return-value]

    def forward(self, outputs, targets: torch.Tensor, gather: Gather | None = None,
                teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``outputs``: a :class:`bpm.models.reid.ReidOutput`; ``targets``: class indices 0..C-1, or -1 for an
        unlabelled sample; ``teacher``: the teacher's normalised embeddings, one row per sample."""
        batch = LossBatch(outputs.features, outputs.pre_neck, outputs.logits, targets, teacher, gather)
        active = [(name, self.weights[name], self._modules[name]) for name in self.weights]
        if teacher is None and any(module.needs_teacher for _, _, module in active):
            raise ValueError("the distillation terms need the teacher's embeddings")
        # Terms that see every sample (unlabelled ones too) first, on the whole batch.
        every = [(name, weight, *module.loss(batch)) for name, weight, module in active if not module.labelled_only]
        labelled = targets >= 0
        if not bool(labelled.all()):
            batch = batch.select(labelled)
        terms = [(name, weight, *module.loss(batch)) for name, weight, module in active if module.labelled_only]
        terms += every
        if len(terms) == 1 and terms[0][1] == 1.0:
            return terms[0][2], terms[0][3]
        total = sum(weight * loss for _name, weight, loss, _stats in terms)
        stats: dict[str, float] = {"loss": float(total.detach())}
        for name, _weight, _loss, term_stats in terms:
            for key, value in term_stats.items():
                stats[f"{name}_loss" if key == "loss" else key] = value
        return total, stats
