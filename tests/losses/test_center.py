"""Centre loss: value by hand, and Wen et al.'s centre update rule."""
import pytest
import torch

from bpm.losses.center import CenterLoss


def test_value_and_first_update_by_hand():
    loss_fn = CenterLoss(num_classes=3, dim=2, alpha=0.5)
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([0, 0, 2])
    loss, stats = loss_fn(features, targets)
    # First sight of classes 0 and 2: centres start at the class means (2, 0) and (0, 2).
    assert torch.equal(loss_fn.centers, torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    # 0.5 * mean(|(1,0)-(2,0)|^2, |(3,0)-(2,0)|^2, 0) = 0.5 * 2/3
    assert float(loss) == pytest.approx(1.0 / 3.0) and stats["loss"] == pytest.approx(1.0 / 3.0)


def test_update_rule_moves_centres_towards_the_batch():
    loss_fn = CenterLoss(num_classes=2, dim=1, alpha=0.5)
    loss_fn(torch.tensor([[0.0]]), torch.tensor([0]))        # centre 0 starts at 0
    loss_fn(torch.tensor([[4.0], [2.0]]), torch.tensor([0, 0]))
    # delta = sum(c - f) / (1 + n) = ((0-4) + (0-2)) / 3 = -2; c -= 0.5 * delta -> 1
    assert float(loss_fn.centers[0, 0]) == pytest.approx(1.0)
    loss_fn.eval()
    loss_fn(torch.tensor([[10.0]]), torch.tensor([0]))       # evaluation never moves a centre
    assert float(loss_fn.centers[0, 0]) == pytest.approx(1.0)


def test_gradient_pulls_features_to_their_centre():
    loss_fn = CenterLoss(num_classes=1, dim=2)
    loss_fn(torch.zeros(1, 2), torch.tensor([0]))
    features = torch.tensor([[2.0, -1.0]], requires_grad=True)
    loss, _ = loss_fn.eval()(features, torch.tensor([0]))
    loss.backward()
    assert torch.allclose(features.grad, torch.tensor([[2.0, -1.0]]))
