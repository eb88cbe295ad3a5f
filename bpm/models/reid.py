"""The re-ID embedding network: backbone trunk + global average pooling, no FC layer."""
from __future__ import annotations

import torch
from torch import nn

from bpm.models.backbones import build_backbone


class ReidModel(nn.Module):
    """Maps images ``[N, 3, H, W]`` to embeddings ``[N, D]`` (2048 for ResNet-50, 1280 for MobileNet-V2).

    Adaptive pooling (instead of the original's fixed 16x8 window) lets any input size and
    either layer4 stride work.
    """

    def __init__(self, net: str, last_conv_stride: int = 1) -> None:
        super().__init__()
        self.net = net
        self.base = build_backbone(net, last_conv_stride)
        self.feature_dim: int = self.base.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.base(images), 1), 1)


def build_model(net: str = "mobilenetV2", last_conv_stride: int = 1, pretrained_path: str | None = None) -> ReidModel:
    """Create a model, optionally initialising its backbone from a local ImageNet weights file."""
    model = ReidModel(net, last_conv_stride)
    if pretrained_path:
        from bpm.models.weights import load_imagenet_weights

        load_imagenet_weights(model, pretrained_path)
    return model
