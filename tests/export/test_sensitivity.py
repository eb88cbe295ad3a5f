"""Per-activation INT8 sensitivity: hand-checked rounding and the harmful layer ranked first."""
from __future__ import annotations

import torch
from torch import nn

from bpm.export.sensitivity import activation_points, activation_sensitivity, fake_quantize
from bpm.models.reid import build_model


def test_fake_quantize_matches_hand_computation():
    # range [0, 2.55]: step 0.01, zero point 0; values clip at the ends and round to the grid
    x = torch.tensor([-1.0, 0.0, 0.004, 0.006, 1.234, 3.0])
    assert torch.allclose(fake_quantize(x, 0.0, 2.55), torch.tensor([0.0, 0.0, 0.0, 0.01, 1.23, 2.55]), atol=1e-6)
    # a range not containing 0 is widened to contain it (as ONNX Runtime does)
    assert fake_quantize(torch.tensor([0.0]), 1.0, 2.0).item() == 0.0


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Sequential(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()), nn.Sequential(nn.Conv2d(2, 2, 1)))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.base(x)).flatten(1)


def test_the_layer_that_amplifies_rounding_ranks_first():
    net = _Net().eval()
    with torch.no_grad():
        first, second = net.base[0][0], net.base[1][0]
        first.weight.fill_(0.0)
        first.bias.copy_(torch.tensor([100.0, 0.0]))  # channel 0: a huge constant dominating the range
        first.weight[1] = torch.tensor([[[0.01]], [[0.0]], [[0.0]]])  # channel 1: tiny, informative
        second.weight.copy_(torch.tensor([[0.0, 1000.0], [0.0, 0.0]]).view(2, 2, 1, 1))  # amplifies channel 1
        second.bias.fill_(0.0)
    x = torch.rand(8, 3, 4, 4) * 10
    rows = activation_sensitivity(net, x, x)
    assert rows[0].point == "base.0.1" and rows[0].cosine < 0.9
    assert rows[-1].cosine > 0.999
    assert {r.point for r in rows} == {"base.0.1", "base.1", "pool"}  # base.0 is base.0.1's tensor: listed once


def test_mobilenet_points_cover_every_block_once():
    model = build_model("mobilenetV2").eval()
    points = activation_points(model)
    assert "pool" in points and "base.features.0.2" in points
    assert not any(name.endswith(".1") and isinstance(m, nn.BatchNorm2d) for name, m in points.items()
                   if name.startswith("base.features.0"))  # BN fused with its ReLU6: not a point
    rows = activation_sensitivity(model, torch.randn(4, 3, 64, 32), torch.randn(2, 3, 64, 32))
    assert len({r.point for r in rows}) == len(rows) and all(-1.0 <= r.cosine <= 1.0 + 1e-6 for r in rows)
