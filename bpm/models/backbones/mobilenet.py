"""MobileNet-V2 (torchvision), reading both torchvision's ImageNet file and the original's
``mobilenet_v2.pth.tar`` (tonylins) layout."""
from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from bpm.models.input_spec import IMAGENET_MEAN, IMAGENET_STD
from bpm.models.registry import StateDict, register_backbone

_CLASSIFIER = "classifier."
_TONYLINS_BLOCK = re.compile(r"^(.*features\.\d+\.conv\.)(\d+)\.(.+)$")


def is_tonylins_mobilenet(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether MobileNet-V2 keys are in the original's ``mobilenet_v2.pth.tar`` layout (flat blocks)."""
    return any(k.endswith("conv.0.weight") for k in state) and not any(".conv.0.0." in k for k in state)


def convert_tonylins_mobilenet(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename keys of the original ``mobilenet_v2.pth.tar`` layout to torchvision's (any key prefix).

    The original MobileNet-V2 kept each inverted-residual block flat (conv, bn, relu, ...);
    torchvision nests the first two conv-bn-relu triples. Blocks with an expansion layer have
    indices up to 7, the first block (no expansion) up to 4. Other layouts pass unchanged.
    """
    if not is_tonylins_mobilenet(state):
        return dict(state)
    blocks: dict[str, int] = {}
    for key in state:
        match = _TONYLINS_BLOCK.match(key)
        if match:
            blocks[match.group(1)] = max(blocks.get(match.group(1), 0), int(match.group(2)))
    expand_map = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    plain_map = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
    renamed: StateDict = {}
    for key, value in state.items():
        match = _TONYLINS_BLOCK.match(key)
        if match:
            index_map = expand_map if blocks[match.group(1)] == 7 else plain_map
            key = f"{match.group(1)}{index_map[int(match.group(2))]}.{match.group(3)}"
        renamed[key] = value
    return renamed


def mobilenet_imagenet_to_trunk(state: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision or tonylins ``features.*`` keys -> trunk keys (torchvision's), ``classifier.*`` dropped."""
    return convert_tonylins_mobilenet({k: v for k, v in state.items() if not k.startswith(_CLASSIFIER)})


def _layout(state: Mapping[str, torch.Tensor]) -> str:
    return "tonylins layout" if is_tonylins_mobilenet(state) else "torchvision layout"


@register_backbone("mobilenet_v2", aliases=("mobilenetV2",), feature_dim=1280, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   first_conv_key="features.0.0.weight", classifier_prefix=_CLASSIFIER,
                   imagenet_to_trunk=mobilenet_imagenet_to_trunk, imagenet_weights=MobileNet_V2_Weights.IMAGENET1K_V1,
                   normalize_trunk=convert_tonylins_mobilenet, describe_imagenet_layout=_layout)
class MobileNetV2Trunk(nn.Module):
    """MobileNet-V2's ``features`` (1280 channels) at the published strides: an output stride of 32,
    so a 4x2 map at 128x64 (what the other backbones give with ``--last_conv_stride 2``). It has no
    last-stride switch: the registry declares only the switch's default, 1, and refuses 2. Checkpoints
    record that 1, so the network they describe must not change under them."""

    feature_dim = 1280

    def __init__(self, last_conv_stride: int = 1) -> None:
        super().__init__()
        self.features = mobilenet_v2(weights=None).features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
