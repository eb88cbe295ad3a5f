"""What a loss term is: the batch it reads, the result it returns, and the registry that names it.

Why an interface: the criterion (:mod:`bpm.losses.combine`) sums whatever terms have a positive
weight, so a new loss is one new module that subclasses :class:`LossTerm` and registers it; the
command line (its weight switch), the checkpoint (its state), the logs and TensorBoard (its stats)
follow from the declaration::

    @register_loss_term("focal")                  # weight switch --focal_weight, default 0 (off)
    class FocalTerm(LossTerm):
        needs_classes = True                      # the model gets an ID classifier head

        @classmethod
        def build(cls, config: LossConfig, shapes: LossShapes) -> "FocalTerm":
            return cls()

        def loss(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, float]]:
            value = ...                            # a scalar tensor
            return value, {"loss": float(value.detach())}

A module placed in :mod:`bpm.losses` is imported when the terms are first listed; one defined
elsewhere (a test, a plug-in) registers when it is imported. A term's buffers and parameters are
saved with the checkpoint's criterion state under ``<name>.`` and its parameters are optimised with
the model's.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, TypeVar

import torch

from bpm.registry import Registry


# Gathers (features, labels) from every rank for hard-example mining across the global batch.
Gather = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
TermResult = tuple[torch.Tensor, dict[str, float]]


@dataclass(frozen=True)
class LossBatch:
    """One training batch as the loss terms see it.

    ``features`` is the retrieval feature (after the neck), ``pre_neck`` the pooled trunk feature
    (what metric losses use under BNNeck), ``logits`` the ID head's output (None without a head),
    ``targets`` class indices 0..C-1 (-1: an unlabelled sample; terms with ``labelled_only`` never
    see those), ``teacher`` the teacher's normalised embeddings (distillation only) and ``gather``
    the cross-rank gather of ``--gather_for_mining`` (None in one process).
    """

    features: torch.Tensor
    pre_neck: torch.Tensor
    logits: torch.Tensor | None
    targets: torch.Tensor
    teacher: torch.Tensor | None = None
    gather: Gather | None = None

    def select(self, keep: torch.Tensor) -> "LossBatch":
        """The batch restricted to the samples where ``keep`` is true."""
        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[keep]

        return replace(self, features=part(self.features), pre_neck=part(self.pre_neck), logits=part(self.logits),
                       targets=part(self.targets), teacher=part(self.teacher))


@dataclass(frozen=True)
class LossShapes:
    """The sizes a term may need to build its state: training identities, student and teacher feature sizes."""

    num_classes: int = 0
    feature_dim: int = 0
    teacher_dim: int = 0


class LossTerm(torch.nn.Module):
    """Base of every registered loss term (a module, so it may hold buffers and parameters).

    Class attributes (declarations read by the criterion, the switches and resume checks):
        name: set by :func:`register_loss_term`; prefixes its stats (``<name>_loss``) and state keys.
        weight_switch: the switch (and :class:`~bpm.losses.combine.LossConfig` key) holding its weight;
            ``<name>_weight`` unless declared. A weight of 0 leaves the term out.
        weight_help: help text of that switch.
        labelled_only: skip unlabelled samples (label -1, ``--distill_extra`` crops).
        needs_classes: the model needs the ID classifier head (``logits``) and the term the identity count.
        needs_teacher: the term reads ``batch.teacher`` (training needs ``--teacher``).
        on_resume: what ``--resume true`` may change of its weight: ``"on_off"`` (the default: only its
            value, not whether it is on, since its state would appear or vanish), ``"fixed"`` (nothing:
            e.g. the ID head's meaning) or ``""`` (anything).
    """

    name: ClassVar[str] = ""
    weight_switch: ClassVar[str] = ""
    weight_help: ClassVar[str] = ""
    labelled_only: ClassVar[bool] = True
    needs_classes: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    on_resume: ClassVar[str] = "on_off"

    @classmethod
    def build(cls, config: Any, shapes: LossShapes) -> "LossTerm":  # config: a combine.LossConfig
        """The term for a run's loss settings and sizes (default: no arguments)."""
        return cls()

    def loss(self, batch: LossBatch) -> TermResult:
        """``(scalar loss, stats)``: stats are plain floats for the logs; ``loss`` is the term's own value."""
        raise NotImplementedError


LOSS_TERMS: Registry[type[LossTerm]] = Registry("loss term", package="bpm.losses")
Term = TypeVar("Term", bound=type[LossTerm])


def register_loss_term(name: str) -> Callable[[Term], Term]:
    """Class decorator: register a :class:`LossTerm` subclass as loss term ``name`` (duplicates refused)."""
    def decorate(cls: Term) -> Term:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"loss term {name!r}: expected a LossTerm subclass, got {cls!r}")
        cls.name = name
        if not cls.__dict__.get("weight_switch"):
            cls.weight_switch = f"{name}_weight"
        return LOSS_TERMS.register(name)(cls)

    return decorate
