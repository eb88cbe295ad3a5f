import pytest
import torch

from bpm.losses.triplet import BatchHardTripletLoss, euclidean_dist, hard_example_mining


def brute_force(features: torch.Tensor, labels: list[int], margin: float, soft: bool):
    """Per-anchor loops over all pairs: the obvious definition of batch-hard mining."""
    n = len(labels)
    d = [[float(torch.linalg.vector_norm(features[i] - features[j])) for j in range(n)] for i in range(n)]
    losses, ap, an = [], [], []
    for i in range(n):
        pos = max(d[i][j] for j in range(n) if labels[j] == labels[i])
        neg = min(d[i][j] for j in range(n) if labels[j] != labels[i])
        ap.append(pos)
        an.append(neg)
        gap = pos - neg
        losses.append(float(torch.nn.functional.softplus(torch.tensor(gap))) if soft else max(0.0, gap + margin))
    return sum(losses) / n, ap, an


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed, soft):
    g = torch.Generator().manual_seed(seed)
    labels = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
    features = torch.randn(len(labels), 6, generator=g, dtype=torch.float64).float()
    loss, stats = BatchHardTripletLoss(margin=0.3, soft_margin=soft)(features, torch.tensor(labels))
    expected, ap, an = brute_force(features, labels, 0.3, soft)
    assert float(loss) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert stats["dist_ap"] == pytest.approx(sum(ap) / len(ap), rel=1e-4)
    assert stats["dist_an"] == pytest.approx(sum(an) / len(an), rel=1e-4)
    assert stats["precision"] == pytest.approx(sum(a > p for p, a in zip(ap, an)) / len(ap))
    assert stats["satisfy_margin"] == pytest.approx(sum(a > p + 0.3 for p, a in zip(ap, an)) / len(ap))


def test_hand_checked_case():
    # 1-D points: id 0 at 0 and 1, id 1 at 3 and 7.
    features = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    dist = euclidean_dist(features, features)
    dist_ap, dist_an = hard_example_mining(dist, torch.tensor([0, 0, 1, 1]))
    assert dist_ap.tolist() == pytest.approx([1, 1, 4, 4], abs=1e-5)
    assert dist_an.tolist() == pytest.approx([3, 2, 2, 6], abs=1e-5)
    loss, stats = BatchHardTripletLoss(margin=0.5)(features, torch.tensor([0, 0, 1, 1]))
    # relu(1-3+.5)=0, relu(1-2+.5)=0, relu(4-2+.5)=2.5, relu(4-6+.5)=0
    assert float(loss) == pytest.approx(2.5 / 4, abs=1e-5)
    assert stats["precision"] == pytest.approx(0.75)


def test_half_inputs_are_computed_in_fp32_and_gradients_finite():
    features = torch.randn(8, 16).half().requires_grad_(True)
    features.data[1] = features.data[0]  # identical pair: distance 0 must not give NaN gradients
    loss, _ = BatchHardTripletLoss()(features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(features.grad.float()).all()


def test_normalize_feature_is_scale_invariant():
    features = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    fn = BatchHardTripletLoss(normalize_feature=True)
    assert float(fn(features, labels)[0]) == pytest.approx(float(fn(features * 10, labels)[0]), rel=1e-5)
