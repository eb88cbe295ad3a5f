"""Extending training needs no edit outside one's own file: a toy backbone and a toy loss term, both
registered here and nowhere else, train through ``bpm train``'s real path, are recorded, and resume."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bpm.commands import train
from bpm.losses.term import LOSS_TERMS, LossBatch, LossTerm, TermResult, register_loss_term
from bpm.models import registry
from bpm.models.registry import register_backbone
from train_helpers import train_args


class ToyTrunk(nn.Module):
    def __init__(self, last_conv_stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.stem(x)))


class ToySpread(LossTerm):
    """Pull the pre-neck features' mean squared norm towards 1; counts its calls in a buffer (state
    that must travel with the checkpoint)."""

    weight_help = "toy: keep the features' squared norm near 1"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def loss(self, batch: LossBatch) -> TermResult:
        self.calls += 1
        norm = batch.pre_neck.float().pow(2).sum(1).mean()
        value = (norm - 1).pow(2)
        return value, {"loss": float(value.detach()), "toy_norm": float(norm.detach())}


@pytest.fixture
def toys(monkeypatch):
    registry.list_backbones()
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))  # the backbone registry's removal
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    register_backbone("toy_ext_net", feature_dim=8, mean=(0.5,) * 3, std=(0.25,) * 3, first_conv_key="stem.weight",
                      classifier_prefix="fc.", imagenet_file="toy_ext_net-00000000.pth",
                      imagenet_to_trunk=lambda state: dict(state))(ToyTrunk)
    register_loss_term("toy_spread")(ToySpread)
    yield
    LOSS_TERMS.remove("toy_spread")


def test_toy_backbone_and_loss_term_train_record_and_resume(toys, tiny_world, tmp_path):
    exp = tmp_path / "run"
    common = ("--net", "toy_ext_net", "--ids_per_batch", "16", "--sampler_epoch", "ids", "--toy_spread_weight", "0.5",
              "--log_to_file", "true")
    assert train.run(train_args(tiny_world, exp, *common, "--total_epochs", "1")) == 0
    ckpt = torch.load(exp / "ckpt.pth", weights_only=True)
    assert ckpt["global_step"] == 1 and ckpt["net"] == "toy_ext_net"
    assert ckpt["train_config"]["loss"]["weights"] == {"toy_spread": 0.5}
    assert int(ckpt["criterion"]["toy_spread.calls"]) == 1  # the term's state is in the checkpoint
    step = next(json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "step")
    # the original recipe's triplet term plus the toy: the total and each term's stats are logged
    assert {"loss", "triplet_loss", "toy_spread_loss", "toy_norm"} <= set(step)
    assert step["loss"] == pytest.approx(step["triplet_loss"] + 0.5 * step["toy_spread_loss"], rel=1e-5)
    assert json.loads((exp / "config.json").read_text())["toy_spread_weight"] == 0.5

    assert train.run(train_args(tiny_world, exp, *common, "--total_epochs", "2", "--resume", "true")) == 0
    resumed = torch.load(exp / "ckpt.pth", weights_only=True)
    assert resumed["global_step"] == 2 and int(resumed["criterion"]["toy_spread.calls"]) == 2


def test_switching_a_stateful_toy_term_off_on_resume_is_refused(toys, tiny_world, tmp_path):
    exp = tmp_path / "run"
    base = ("--net", "toy_ext_net", "--ids_per_batch", "16", "--sampler_epoch", "ids")
    assert train.run(train_args(tiny_world, exp, *base, "--toy_spread_weight", "1", "--total_epochs", "1")) == 0
    from bpm.errors import BpmError

    with pytest.raises(BpmError, match=r"toy_spread_weight 1\.0 -> 0\.0"):
        train.run(train_args(tiny_world, exp, *base, "--total_epochs", "2", "--resume", "true"))


def test_the_toys_are_gone_after_their_tests():
    assert "toy_spread" not in LOSS_TERMS and "toy_ext_net" not in registry.backbone_choices()
