"""Backbones from torchvision, trimmed to their convolutional trunk.

Attribute names are chosen so that state_dict keys match the original project's released
weights (``base.base.*`` for ResNet-50, ``base.features.*`` for MobileNet-V2) once wrapped by
:class:`bpm.models.reid.ReidModel`; they must not change. The trunk starts random;
``bpm.models.imagenet`` / ``bpm.models.weights`` load weights on request. Which trunks exist, and
what else is known about each (feature size, ImageNet weights, key mapping), is
:data:`bpm.models.registry.BACKBONES`.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet50

from bpm.errors import BpmError


class ResNet50Trunk(nn.Module):
    """ResNet-50 without its pooling and classifier, with a configurable layer4 stride.

    Stride 1 in layer4 (the re-ID default) doubles the final feature map to 16x8 for a 256x128
    input, which helps retrieval at little cost.
    """

    feature_dim = 2048

    def __init__(self, last_conv_stride: int = 1) -> None:
        super().__init__()
        if last_conv_stride not in (1, 2):
            raise BpmError(f"--last_conv_stride: expected 1 or 2, got {last_conv_stride}")
        net = resnet50(weights=None)
        del net.fc, net.avgpool
        if last_conv_stride == 1:
            block = net.layer4[0]
            block.conv2.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.base = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))


class MobileNetV2Trunk(nn.Module):
    """MobileNet-V2's ``features`` (1280 channels); ``last_conv_stride`` does not apply to it."""

    feature_dim = 1280

    def __init__(self, last_conv_stride: int = 1) -> None:
        super().__init__()
        self.features = mobilenet_v2(weights=None).features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_backbone(net: str, last_conv_stride: int = 1) -> nn.Module:
    """The trunk of the backbone registered as ``net`` (random weights); unknown names are a one-line error."""
    from bpm.models.registry import get_backbone  # the registry imports the trunk classes above

    return get_backbone(net).build(last_conv_stride)


def __getattr__(name: str):
    if name == "BACKBONES":  # older code imported the table from here
        from bpm.models.registry import BACKBONES

        return BACKBONES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
