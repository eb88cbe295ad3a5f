"""Every registered loss term, taken from the registry: alone in the criterion it gives a finite loss with
a gradient and its stats; declarations reach the switches; names are checked."""
import argparse

import pytest
import torch

from bpm.cli.switches import add_train_arguments, apply_recipe, train_config
from bpm.errors import BpmError
from bpm.losses.combine import LossConfig, ReidCriterion
from bpm.losses.term import LOSS_TERMS, LossTerm, register_loss_term
from bpm.models.reid import ReidOutput


def _alone(name: str) -> LossConfig:
    """A loss config where only term ``name`` has a weight (1)."""
    fields = {LOSS_TERMS.get(n).weight_switch: 0.0 for n in LOSS_TERMS if LOSS_TERMS.get(n).weight_switch
              in LossConfig.__dataclass_fields__}
    term = LOSS_TERMS.get(name)
    if term.weight_switch in fields:
        return LossConfig(**{**fields, term.weight_switch: 1.0})
    return LossConfig(**fields, weights={name: 1.0})


@pytest.mark.parametrize("name", LOSS_TERMS.names())
def test_each_term_alone_gives_a_finite_loss_with_a_gradient(name):
    torch.manual_seed(0)
    pre = torch.randn(8, 6, requires_grad=True)
    outputs = ReidOutput(pre * 2, pre, torch.randn(8, 4, requires_grad=True))
    targets = torch.arange(8) % 4
    criterion = ReidCriterion(_alone(name), num_classes=4, feature_dim=6, teacher_dim=5)
    assert list(criterion.weights) == [name] and isinstance(criterion.term(name), LossTerm)
    loss, stats = criterion(outputs, targets, teacher=torch.randn(8, 5))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and stats["loss"] == pytest.approx(float(loss.detach()))
    assert pre.grad is not None or outputs.logits.grad is not None


def test_every_term_has_a_weight_switch_that_reaches_the_config():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    switches = {a.dest for a in parser._actions}
    for name in LOSS_TERMS:
        assert LOSS_TERMS.get(name).weight_switch in switches, name
    args = parser.parse_args(["--relational_weight", "2"])
    apply_recipe(args)
    assert train_config(args).loss.weight_of(LOSS_TERMS.get("relational")) == 2.0


def test_a_term_name_is_taken_once_and_must_be_a_loss_term():
    with pytest.raises(BpmError, match="'triplet' .* already registered by bpm.losses.triplet"):
        @register_loss_term("triplet")
        class Again(LossTerm):
            pass
    with pytest.raises(TypeError, match="LossTerm subclass"):
        register_loss_term("plain")(torch.nn.Identity)
    assert "plain" not in LOSS_TERMS
