"""The backbones we know, one :class:`BackboneSpec` each: how to build the trunk, what it outputs,
where its ImageNet weights come from and how their keys map onto the trunk's.

A new backbone is one entry in :data:`BACKBONES`; the model, the weights loading (ImageNet files,
checkpoints, released weights) and ``--net`` validation all go through this table.

Key levels used below (``<t>`` = a trunk key):

* **trunk** keys: ``trunk.state_dict()`` (``base.conv1.weight`` for ResNet-50, ``features.0.0.weight`` for
  MobileNet-V2);
* **model** keys: ``ReidModel.state_dict()``, the trunk under ``base.`` (``base.base.*`` / ``base.features.*``,
  the names of the original's released weights), plus whatever else the model holds (e.g. ``neck.*``);
* **ImageNet** keys: a torchvision (or the original's) ImageNet classification state_dict.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, WeightsEnum

from bpm.errors import BpmError
from bpm.models import efficientnet_lite
from bpm.models.backbones import MobileNetV2Trunk, ResNet50Trunk

StateDict = dict[str, torch.Tensor]

#: Prefix of the trunk's keys inside :class:`bpm.models.reid.ReidModel`'s state_dict.
MODEL_TRUNK_PREFIX = "base."


def _torchvision_layout(state: Mapping[str, torch.Tensor]) -> str:
    return "torchvision layout"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the rest of the package needs to know about one backbone."""

    name: str
    #: ``build(last_conv_stride)`` -> the convolutional trunk, ``[N, 3, H, W]`` -> ``[N, feature_dim, h, w]``.
    build: Callable[[int], nn.Module]
    feature_dim: int
    #: Whether ``--last_conv_stride`` changes the trunk (ResNet-50's layer4); others ignore it.
    has_last_stride: bool
    #: torchvision's ImageNet weights used by ``--net_pretrained_path imagenet``; None where the
    #: ImageNet file is not torchvision's (then :attr:`imagenet_file` names it).
    imagenet_weights: WeightsEnum | None
    #: ImageNet classification state_dict (torchvision's or an older layout) -> trunk keys, classifier dropped.
    imagenet_to_trunk: Callable[[StateDict], StateDict]
    #: Trunk-level state_dict in an older layout (e.g. the original's MobileNet-V2) -> the trunk's own keys.
    normalize_trunk: Callable[[StateDict], StateDict]
    #: Keys (model, trunk or ImageNet level, ``module.`` stripped) that only this backbone has.
    key_prefixes: tuple[str, ...]
    #: A short name of the layout of an ImageNet state_dict, for log lines ("torchvision layout").
    describe_imagenet_layout: Callable[[StateDict], str] = _torchvision_layout
    #: Name of an ImageNet file that only a local copy in torch's hub cache provides (no download).
    imagenet_file: str | None = None
    #: Backbones may share key names (EfficientNet-Lite0/1/2): whether a state_dict is this one's
    #: (from its shapes), to tell them apart; None: its keys suffice.
    matches: Callable[[StateDict], bool] | None = None

    def owns_key(self, key: str) -> bool:
        """Whether a state_dict key (any level) belongs to this backbone."""
        return re.sub(r"^module\.", "", key).startswith(self.key_prefixes)

    @property
    def imagenet_name(self) -> str:
        """``MobileNet_V2_Weights.IMAGENET1K_V1``: torchvision's name of the ImageNet weights (or the file's name)."""
        if self.imagenet_weights is None:
            return str(self.imagenet_file)
        return f"{type(self.imagenet_weights).__name__}.{self.imagenet_weights.name}"

    @property
    def imagenet_source(self) -> str:
        """Where the ImageNet weights come from, for log lines: ``torchvision <name>`` or the file's name."""
        return self.imagenet_name if self.imagenet_weights is None else f"torchvision {self.imagenet_name}"


# ------------------------------------------------------------------------------------------ ResNet-50

_RESNET_CLASSIFIER = ("fc.",)


def _resnet_imagenet_to_trunk(state: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision ``resnet50()`` keys (``conv1.*``, ``layer1-4.*``) -> trunk keys (``base.conv1.*``), ``fc.*`` dropped."""
    return {f"base.{k}": v for k, v in state.items() if not k.startswith(_RESNET_CLASSIFIER)}


# --------------------------------------------------------------------------------------- MobileNet-V2

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


def _mobilenet_imagenet_to_trunk(state: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision or tonylins ``features.*`` keys -> trunk keys (torchvision's), ``classifier.*`` dropped."""
    return convert_tonylins_mobilenet({k: v for k, v in state.items() if not k.startswith("classifier.")})


def _mobilenet_layout(state: Mapping[str, torch.Tensor]) -> str:
    return "tonylins layout" if is_tonylins_mobilenet(state) else "torchvision layout"


# ---------------------------------------------------------------------------------- EfficientNet-Lite

def _efficientnet_lite(name: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        build=lambda last_conv_stride: efficientnet_lite.build_efficientnet_lite(name, last_conv_stride),
        feature_dim=efficientnet_lite.FEATURE_DIM,
        has_last_stride=True,
        imagenet_weights=None,
        imagenet_to_trunk=efficientnet_lite.imagenet_to_trunk,
        normalize_trunk=_identity,
        key_prefixes=("base.stem.", "base.blocks.", "base.top.", "stem.", "blocks.", "top.",
                      *efficientnet_lite.IMAGENET_PREFIXES),
        describe_imagenet_layout=lambda state: "efficientnet_pytorch layout",
        imagenet_file=efficientnet_lite.IMAGENET_FILES[name],
        matches=lambda state: efficientnet_lite.variant_of(state) == name,
    )


# ------------------------------------------------------------------------------------------- registry

def _identity(state: Mapping[str, torch.Tensor]) -> StateDict:
    return dict(state)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="resnet50",
            build=ResNet50Trunk,
            feature_dim=2048,
            has_last_stride=True,
            imagenet_weights=ResNet50_Weights.IMAGENET1K_V1,
            imagenet_to_trunk=_resnet_imagenet_to_trunk,
            normalize_trunk=_identity,
            key_prefixes=("base.base.", "base.conv1.", "base.bn1.", "base.layer",
                          "conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc."),
        ),
        BackboneSpec(
            name="mobilenetV2",
            build=MobileNetV2Trunk,
            feature_dim=1280,
            has_last_stride=False,
            imagenet_weights=MobileNet_V2_Weights.IMAGENET1K_V1,
            imagenet_to_trunk=_mobilenet_imagenet_to_trunk,
            normalize_trunk=convert_tonylins_mobilenet,
            key_prefixes=("base.features.", "features.", "classifier."),
            describe_imagenet_layout=_mobilenet_layout,
        ),
        *(_efficientnet_lite(name) for name in efficientnet_lite.IMAGENET_FILES),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered as ``name``; an unknown name is a one-line :class:`BpmError` listing the choices."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise BpmError(f"--net: unknown network {name!r}; expected one of {', '.join(BACKBONES)}") from None


def detect_backbone(state: Mapping[str, torch.Tensor]) -> BackboneSpec | None:
    """The backbone owning most keys of a state_dict (any level), or None when none owns any.

    Keys no backbone owns (a neck, a head, ...) do not count either way; among backbones owning
    equally many (EfficientNet-Lite0/1/2), the one whose :attr:`BackboneSpec.matches` says so wins.
    """
    counts = {name: sum(spec.owns_key(k) for k in state) for name, spec in BACKBONES.items()}
    best = max(counts, key=counts.__getitem__, default=None)
    if best is None or counts[best] == 0:
        return None
    tied = [BACKBONES[name] for name in counts if counts[name] == counts[best]]
    # Siblings own the same keys (EfficientNet-Lite0/1/2): the shapes tell them apart.
    return next((spec for spec in tied if spec.matches is not None and spec.matches(state)), BACKBONES[best])


def split_model_state(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """(trunk-level state of the ``base.*`` keys, the other keys) of a model-level state_dict."""
    trunk = {k[len(MODEL_TRUNK_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_TRUNK_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(MODEL_TRUNK_PREFIX)}
    return trunk, rest
