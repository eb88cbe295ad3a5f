"""The re-ID network: backbone trunk -> global pooling -> neck -> (training only) ID classifier head.

In eval mode the model maps images ``[N, 3, H, W]`` to retrieval features ``[N, D]`` (the neck's
output; with no neck the pooled trunk feature, as in the original). In train mode it returns a
:class:`ReidOutput` so that each loss can take the tensor it needs (see :mod:`bpm.losses.combine`).

State-dict keys: ``base.*`` (the trunk, named as in the original's released weights), ``pool.p``
(GeM only), ``neck.bn.*`` (BNNeck only), ``head.weight`` (training only; never released). The
architecture of a meta-less weights file (the original's) can therefore be read from its keys
(:func:`architecture_of`); files written today record it (:mod:`bpm.models.meta`).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import torch
from torch import nn

from bpm.models.backbones import build_backbone
from bpm.models.heads import HEAD_PREFIX, build_id_head
from bpm.models.necks import build_neck
from bpm.models.pooling import build_pooling
from bpm.models.registry import get_backbone
from bpm.models.weights import load_imagenet_weights


class ReidOutput(NamedTuple):
    """What a training forward pass returns."""

    features: torch.Tensor       # after the neck: what retrieval uses
    pre_neck: torch.Tensor       # pooled trunk feature: what the triplet and centre losses use
    logits: torch.Tensor | None  # ID classifier over the training identities, if the model has a head


class ReidModel(nn.Module):
    """Adaptive pooling (instead of the original's fixed 16x8 window) lets any input size and
    either layer4 stride work."""

    def __init__(self, net: str, last_conv_stride: int = 1, pooling: str = "avg", neck: str = "none",
                 num_classes: int = 0) -> None:
        super().__init__()
        spec = get_backbone(str(net))
        self.net = spec.name  # mobilenetV2 -> mobilenet_v2: files record the canonical name
        self.last_conv_stride = int(last_conv_stride)
        self.base = build_backbone(self.net, self.last_conv_stride)  # refuses a stride the backbone lacks
        self.feature_dim: int = spec.feature_dim
        self.pool = build_pooling(pooling)
        self.neck = build_neck(neck, self.feature_dim)
        self.head = build_id_head(self.feature_dim, num_classes) if num_classes > 0 else None
        self.architecture = {"pooling": pooling, "neck": neck}

    def forward(self, images: torch.Tensor) -> torch.Tensor | ReidOutput:
        pre_neck = self.pool(self.base(images))
        features = self.neck(pre_neck)
        if not self.training:
            return features
        logits = self.head(features) if self.head is not None else None
        return ReidOutput(features, pre_neck, logits)


def architecture_of(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Pooling and neck of the model a state_dict came from, judged from its keys (files of the
    original and of the first versions have neither: average pooling, no neck)."""
    keys = {k.removeprefix("module.") for k in state}
    return {"pooling": "gem" if "pool.p" in keys else "avg", "neck": "bnneck" if "neck.bn.weight" in keys else "none"}


def inference_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict without the training-only head (for evaluation, export and released weights)."""
    return {k: v for k, v in state.items() if not k.removeprefix("module.").startswith(HEAD_PREFIX)}


def build_model(net: str = "mobilenet_v2", last_conv_stride: int = 1, pretrained_path: str | None = None,
                pooling: str = "avg", neck: str = "none", num_classes: int = 0) -> ReidModel:
    """Create a model, optionally initialising its backbone from a local ImageNet weights file.

    Args:
        net: a registered backbone name (:func:`bpm.list_backbones`; aliases accepted).
        last_conv_stride: 1 (re-ID's usual higher-resolution last stage) or 2, where the backbone allows it.
        pretrained_path: a local ImageNet (or re-ID) weights file for the backbone; None: random weights.
        pooling: the global pooling of the last feature map (``avg``, ...).
        neck: ``none`` or ``bnneck`` (a BatchNorm between pooling and the ID head).
        num_classes: training identities for the ID head; 0: no head (inference).

    Returns:
        The model, in training mode, on the CPU.
    """
    model = ReidModel(net, last_conv_stride, pooling, neck, num_classes)
    if pretrained_path:
        load_imagenet_weights(model, pretrained_path)
    return model
