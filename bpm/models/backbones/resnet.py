"""ResNet-50 (torchvision), with a configurable layer4 stride."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from bpm.errors import BpmError
from bpm.models.input_spec import IMAGENET_MEAN, IMAGENET_STD
from bpm.models.registry import StateDict, register_backbone

_CLASSIFIER = "fc."


def resnet_imagenet_to_trunk(state: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision ``resnet50()`` keys (``conv1.*``, ``layer1-4.*``) -> trunk keys (``base.conv1.*``), ``fc.*`` dropped."""
    return {f"base.{k}": v for k, v in state.items() if not k.startswith(_CLASSIFIER)}


@register_backbone("resnet50", feature_dim=2048, mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv_key="conv1.weight",
                   classifier_prefix=_CLASSIFIER, imagenet_to_trunk=resnet_imagenet_to_trunk, last_conv_strides=(1, 2),
                   imagenet_weights=ResNet50_Weights.IMAGENET1K_V1)
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
