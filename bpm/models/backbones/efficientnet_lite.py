"""EfficientNet-Lite0/1/2 (Google's edge variant of EfficientNet-B0) as a re-ID trunk, written here.

torchvision's EfficientNet is the original one (swish, squeeze-and-excitation), which quantises
poorly; the "lite" variant removes SE, uses ReLU6, fixes the stem at 32 and the head at 1280
channels for every size and does not scale the first and last stages' repeats, so that INT8
export stays close to FP32 (the reason it is here, next to MobileNet-V2).

What must match Google's TF release so that its ImageNet weights (the efficientnet_pytorch-style
files ``efficientnet-lite{0,1,2}-*.pth``, see :data:`IMAGENET_FILES`) reproduce its predictions:

* TensorFlow "SAME" padding: symmetric for stride 1 (odd kernels), but for stride 2 the extra
  pixel goes to the bottom/right, and how many pixels depends on the input's parity. Stride-1
  convolutions use the convolution's own padding; stride-2 ones pad explicitly (``F.pad``) by
  an amount computed from the input's size, which traces into the ONNX graph.
* BatchNorm eps 1e-3 (TF's), ReLU6 after the stem, expansion, depthwise and head convolutions,
  no activation after the projection.
* Input RGB in 0..255 scaled as ``(x - 127) / 128``: :data:`INPUT_MEAN`/:data:`INPUT_STD` for
  RGB in [0, 1].

``last_conv_stride=1`` sets the stride of the last stride-2 stage (stage 6, 192 channels at Lite0)
to 1, as ResNet-50's layer4 trick does for re-ID: a 256x128 input then gives a 16x8 map instead of
8x4. Its first block has no residual either way (its input and output channels differ).

Trunk keys: ``stem.{conv,bn}.*``, ``blocks.K.{expand,depthwise,project}.{conv,bn}.*`` (no
``expand`` where the expansion ratio is 1), ``top.{conv,bn}.*``; :func:`imagenet_to_trunk` maps
the published names onto them.
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from bpm.errors import BpmError
from bpm.models.registry import StateDict, register_backbone

#: The published ImageNet files (their names carry a sha256 prefix), as ``--net_pretrained_path
#: imagenet`` looks for them in torch's hub cache, ``$TORCH_HOME/hub/checkpoints/``.
IMAGENET_FILES = {
    "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
    "efficientnet_lite1": "efficientnet-lite1-77cc7160.pth",
    "efficientnet_lite2": "efficientnet-lite2-9656183e.pth",
}
FEATURE_DIM = 1280
STEM_CHANNELS = 32
#: ``(x - 127) / 128`` on RGB 0..255, written for RGB in [0, 1] as the data pipeline gives it.
INPUT_MEAN = (127 / 255,) * 3
INPUT_STD = (128 / 255,) * 3
BN_EPS = 1e-3

#: (width multiplier, depth multiplier) per variant.
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}
#: EfficientNet-B0's stages: (repeats, kernel, first stride, expansion, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
#: Index (into :data:`STAGES`) of the stage whose stride ``last_conv_stride`` sets.
LAST_STRIDE_STAGE = 5


def round_channels(channels: int, width: float) -> int:
    """TF's ``round_filters``: scale by ``width``, round to a multiple of 8, never more than 10 % down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def stage_repeats(depth: float) -> list[int]:
    """Blocks per stage: ``ceil(depth * repeats)``, except the first and last stages (the "lite" rule)."""
    last = len(STAGES) - 1
    return [r if i in (0, last) else int(math.ceil(depth * r)) for i, (r, *_rest) in enumerate(STAGES)]


@torch.fx.wrap
def same_pad_stride2(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """TF "SAME" padding before a stride-2 convolution with an odd ``kernel``: ``(kernel - 1) // 2``
    pixels after, one less before on an even size.

    One opaque node to ``torch.fx`` (``fx.wrap``): the INT8 fine-tuning (:mod:`bpm.export.qat`)
    traces the trunk, and the size arithmetic would otherwise become integer nodes in its graph.
    """
    after = (kernel - 1) // 2
    h, w = x.shape[-2], x.shape[-1]
    if torch.jit.is_tracing():  # ONNX export: H and W are fixed in the graph, so are the pads
        h, w = int(h), int(w)
    return F.pad(x, (after - 1 + w % 2, after, after - 1 + h % 2, after))


class ConvBN(nn.Module):
    """Convolution (no bias) -> BatchNorm (eps 1e-3) -> optional ReLU6, with TF "SAME" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        if kernel % 2 == 0 or stride not in (1, 2):
            raise ValueError(f"ConvBN: odd kernel and stride 1 or 2 expected, got kernel {kernel}, stride {stride}")
        self.kernel, self.stride = kernel, stride
        # Stride 1, odd kernel: TF's SAME is symmetric, the convolution pads itself.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = same_pad_stride2(x, self.kernel)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 project (linear)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int,
                 residual: bool) -> None:
        super().__init__()
        hidden = in_channels * expansion
        # Identity holds no state: no ``expand.*`` keys where the published block has none.
        self.expand = ConvBN(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, out_channels, 1, act=False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLiteTrunk(nn.Module):
    """``[N, 3, H, W]`` -> ``[N, 1280, h, w]``: stem, MBConv blocks, 1x1 head conv + BN + ReLU6."""

    feature_dim = FEATURE_DIM

    def __init__(self, variant: str = "efficientnet_lite0", last_conv_stride: int = 1) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise BpmError(f"--net: unknown EfficientNet-Lite variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if last_conv_stride not in (1, 2):
            raise BpmError(f"--last_conv_stride: expected 1 or 2, got {last_conv_stride}")
        width, depth = VARIANTS[variant]
        self.variant = variant
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2)
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        for index, ((_r, kernel, stride, expansion, out), repeats) in enumerate(zip(STAGES, stage_repeats(depth))):
            out = round_channels(out, width)
            if index == LAST_STRIDE_STAGE:
                stride = last_conv_stride
            for i in range(repeats):
                first = i == 0
                # Residual as published: only where the block keeps the size (its nominal stride 1) and width.
                residual = not first or (STAGES[index][2] == 1 and channels == out)
                blocks.append(MBConv(channels, out, kernel, stride if first else 1, expansion, residual))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.top = ConvBN(channels, FEATURE_DIM, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.blocks(self.stem(x)))


class EfficientNetLiteClassifier(nn.Module):
    """The ImageNet classifier (trunk at its published strides, average pool, 1000-way ``fc``):
    what the published files hold, for checking a conversion against its predictions."""

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000) -> None:
        super().__init__()
        self.trunk = EfficientNetLiteTrunk(variant, last_conv_stride=2)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x).mean(dim=(2, 3)))

    def load_imagenet(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a published state_dict (efficientnet_pytorch names, ``_fc`` included), strictly."""
        self.trunk.load_state_dict(imagenet_to_trunk(state))
        self.fc.load_state_dict({"weight": state[f"{CLASSIFIER_PREFIX}weight"], "bias": state[f"{CLASSIFIER_PREFIX}bias"]})


_TOP_LEVEL = {"_conv_stem.": "stem.conv.", "_bn0.": "stem.bn.", "_conv_head.": "top.conv.", "_bn1.": "top.bn."}
_IN_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
             "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z_]+\d?)\.(.+)$")
#: The published files' ImageNet classifier, dropped for the trunk.
CLASSIFIER_PREFIX = "_fc."


def imagenet_to_trunk(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Published (efficientnet_pytorch) names -> trunk keys; ``_fc.*`` dropped, other keys kept as they are.

    Each key is mapped on its own (never from its neighbours): the registry derives the trunk's
    first-convolution key by applying this to a one-key dict."""
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(CLASSIFIER_PREFIX):
            continue
        match = _BLOCK_KEY.match(key)
        if match and match.group(2) in _IN_BLOCK:
            key = f"blocks.{match.group(1)}.{_IN_BLOCK[match.group(2)]}.{match.group(3)}"
        else:
            for old, new in _TOP_LEVEL.items():
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        out[key] = value
    return out


_PROJECT_KEY = re.compile(r"(?:^|\.)_?blocks\.(\d+)\.(?:_project_conv|project\.conv)\.weight$")


def variant_of(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which variant a state_dict (published, trunk or model keys) is, from its blocks' count and
    last width (the three share key names); None when no variant has that shape."""
    projects = {int(m.group(1)): v for k, v in state.items() if (m := _PROJECT_KEY.search(k))}
    if not projects:
        return None
    last = max(projects)
    found = (last + 1, int(projects[last].shape[0]))
    for variant, (width, depth) in VARIANTS.items():
        if found == (sum(stage_repeats(depth)), round_channels(STAGES[-1][4], width)):
            return variant
    return None


def _efficientnet_pytorch_layout(state: Mapping[str, torch.Tensor]) -> str:
    return "efficientnet_pytorch layout"


def _registration(variant: str) -> dict:
    """What the registry needs of ``variant``: the three share every key name, so :func:`variant_of`
    tells a file without a recorded network apart by its shapes (an unknown shape matches all three,
    and the caller is asked for ``--net``)."""
    return dict(feature_dim=FEATURE_DIM, mean=INPUT_MEAN, std=INPUT_STD, first_conv_key="_conv_stem.weight",
                classifier_prefix=CLASSIFIER_PREFIX, imagenet_to_trunk=imagenet_to_trunk,
                imagenet_file=IMAGENET_FILES[variant], last_conv_strides=(1, 2),
                describe_imagenet_layout=_efficientnet_pytorch_layout,
                matches=lambda state: variant_of(state) in (None, variant))


@register_backbone("efficientnet_lite0", **_registration("efficientnet_lite0"))
def efficientnet_lite0(last_conv_stride: int = 1) -> EfficientNetLiteTrunk:
    """EfficientNet-Lite0 (width 1.0, depth 1.0), random weights."""
    return EfficientNetLiteTrunk("efficientnet_lite0", last_conv_stride)


@register_backbone("efficientnet_lite1", **_registration("efficientnet_lite1"))
def efficientnet_lite1(last_conv_stride: int = 1) -> EfficientNetLiteTrunk:
    """EfficientNet-Lite1 (width 1.0, depth 1.1), random weights."""
    return EfficientNetLiteTrunk("efficientnet_lite1", last_conv_stride)


@register_backbone("efficientnet_lite2", **_registration("efficientnet_lite2"))
def efficientnet_lite2(last_conv_stride: int = 1) -> EfficientNetLiteTrunk:
    """EfficientNet-Lite2 (width 1.1, depth 1.2), random weights."""
    return EfficientNetLiteTrunk("efficientnet_lite2", last_conv_stride)
