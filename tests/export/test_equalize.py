"""Cross-layer range equalisation: the network's function is unchanged, small channels are widened."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bpm.export.equalize import MAX_SCALE, equalization_pairs, equalize_ranges
from bpm.models.reid import build_model


class _Chain(nn.Module):
    """conv-BN-ReLU6 -> depthwise conv-BN -> ReLU -> 1x1 conv, plus a residual BN that must be left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6()
        self.dw, self.bn2, self.act2 = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU()
        self.pw, self.bn3 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.skip, self.bn4, self.act4 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU()
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.dw(y)))
        z = self.bn3(self.pw(y))
        s = self.act4(self.bn4(self.skip(x)))
        return self.out(z + s) + s.mean()  # bn3 feeds a sum, act4 feeds two nodes: neither is a pair


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.2)
    return model.eval()


def test_pairs_follow_the_graph_and_skip_residual_uses():
    pairs = {(p.bn_name, p.conv_name, type(p.activation).__name__) for p in equalization_pairs(_Chain())}
    assert pairs == {("bn1", "dw", "ReLU6"), ("bn2", "pw", "ReLU")}
    assert [p.depthwise for p in equalization_pairs(_Chain())] == [True, False]


def test_a_narrow_channel_is_widened_without_changing_the_output():
    torch.manual_seed(0)
    model = _randomised(_Chain())
    with torch.no_grad():
        model.bn1.weight[2] = 0.01  # channel 2 after the first layer spans ~1% of the others' range
        model.bn1.bias[2] = 0.02
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
        narrow = model.act1(model.bn1(model.conv1(x)))[:, 2].max()
    result = equalize_ranges(model, x)
    with torch.no_grad():
        after = model(x)
        widened = model.act1(model.bn1(model.conv1(x)))[:, 2].max()
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5)
    assert widened > 5 * narrow
    assert widened <= 6.0 / 4.0 + 1e-6  # ReLU6 headroom: never above 6 / margin of the calibration peak
    assert result.pairs == 2 and result.scaled_channels >= 1 and 1.0 < result.largest_scale <= MAX_SCALE


@pytest.mark.parametrize("net", ["mobilenetV2", "resnet50"])
def test_backbones_keep_their_function(net):
    torch.manual_seed(1)
    model = _randomised(build_model(net), seed=1)
    x = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        before = model(x)
    result = equalize_ranges(model.base, x)
    with torch.no_grad():
        after = model(x)
    cosine = nn.functional.cosine_similarity(after, before, dim=1)
    assert result.pairs > 10 and result.scaled_channels > 0
    assert cosine.min() > 0.99999
    assert torch.allclose(after, before, rtol=1e-3, atol=1e-4 * before.abs().max().item())
