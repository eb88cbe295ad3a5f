"""The criterion: which tensor each term sees, the weighted total, and the stats it returns."""
import pytest
import torch

from bpm.losses.combine import LossConfig, ReidCriterion
from bpm.losses.cross_entropy import CrossEntropyLabelSmooth
from bpm.losses.triplet import BatchHardTripletLoss
from bpm.models.reid import ReidOutput


def _outputs(seed: int = 0, n: int = 8, dim: int = 6, classes: int = 4):
    torch.manual_seed(seed)
    pre = torch.randn(n, dim)
    post = torch.randn(n, dim)
    return ReidOutput(post, pre, torch.randn(n, classes)), torch.arange(n) % classes


def test_triplet_alone_keeps_the_original_stats():
    outputs, targets = _outputs()
    loss, stats = ReidCriterion(LossConfig())(outputs, targets)
    want, want_stats = BatchHardTripletLoss(0.3)(outputs.pre_neck, targets)
    assert float(loss) == pytest.approx(float(want))
    assert stats == want_stats and set(stats) == {"loss", "precision", "satisfy_margin", "dist_ap", "dist_an"}


def test_weighted_sum_with_each_term_on_its_tensor():
    outputs, targets = _outputs()
    config = LossConfig(triplet_weight=1.0, id_loss_weight=0.5, label_smoothing=0.1, center_loss_weight=0.01)
    criterion = ReidCriterion(config, num_classes=4, feature_dim=6)
    loss, stats = criterion(outputs, targets)
    triplet, _ = BatchHardTripletLoss(0.3)(outputs.pre_neck, targets)      # triplet: before the neck
    ce, _ = CrossEntropyLabelSmooth(0.1)(outputs.logits, targets)           # ID: the head's logits
    assert stats["triplet_loss"] == pytest.approx(float(triplet))
    assert stats["id_loss"] == pytest.approx(float(ce))
    assert float(loss) == pytest.approx(float(triplet) + 0.5 * float(ce) + 0.01 * stats["center_loss"], rel=1e-5)
    assert stats["loss"] == pytest.approx(float(loss))
    assert {"precision", "dist_ap", "id_accuracy"} <= set(stats)


def test_gather_is_used_for_triplet_mining_only():
    outputs, targets = _outputs()
    seen = []

    def gather(features, labels):
        seen.append(features.shape)
        return torch.cat([features, features + 5]), torch.cat([labels, labels + 100])

    ReidCriterion(LossConfig(id_loss_weight=1.0), num_classes=4)(outputs, targets, gather)
    assert seen == [(8, 6)]


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="number of training identities"):
        ReidCriterion(LossConfig(id_loss_weight=1.0))
    with pytest.raises(ValueError, match="no term"):
        ReidCriterion(LossConfig(triplet_weight=0.0))
    outputs, targets = _outputs()
    with pytest.raises(ValueError, match="classifier head"):
        ReidCriterion(LossConfig(id_loss_weight=1.0), num_classes=4)(outputs._replace(logits=None), targets)
