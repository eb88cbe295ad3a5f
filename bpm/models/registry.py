"""The backbones we know, one :class:`BackboneSpec` each, registered by a decorator next to their builder.

Why a decorator: a new backbone is one new file in :mod:`bpm.models.backbones` (plus its test);
``--net``'s choices, the model, every weights reader and the input normalisation take what the
file declares, and nothing else needs editing::

    @register_backbone("mobilenet_v2", aliases=("mobilenetV2",), feature_dim=1280, mean=..., std=...,
                       first_conv_key="features.0.0.weight", classifier_prefix="classifier.",
                       imagenet_to_trunk=..., imagenet_weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    class MobileNetV2Trunk(nn.Module): ...

Declared, not guessed: each entry names its ImageNet classifier's key prefix, the key of its first
convolution in an ImageNet file and the function that turns an ImageNet file into trunk weights.
A file that records its network (:mod:`bpm.models.meta`) is never guessed at; only files without
that record (the original's releases, ImageNet files) are recognised by the first-convolution key.

Key levels used below (``<t>`` = a trunk key):

* **trunk** keys: ``trunk.state_dict()`` (``base.conv1.weight`` for ResNet-50, ``features.0.0.weight`` for
  MobileNet-V2);
* **model** keys: ``ReidModel.state_dict()``, the trunk under ``base.`` (``base.base.*`` / ``base.features.*``,
  the names of the original's released weights), plus whatever else the model holds (e.g. ``neck.*``);
* **ImageNet** keys: an ImageNet classification state_dict (torchvision's or the backbone's own layout).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, TypeVar

import torch
from torch import nn

from bpm.errors import BpmError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

StateDict = dict[str, torch.Tensor]
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

#: Prefix of the trunk's keys inside :class:`bpm.models.reid.ReidModel`'s state_dict.
MODEL_TRUNK_PREFIX = "base."
#: The package whose modules register the built-in backbones (imported on first lookup).
BACKBONE_PACKAGE = "bpm.models.backbones"


def _identity(state: Mapping[str, torch.Tensor]) -> StateDict:
    return dict(state)


def _torchvision_layout(state: Mapping[str, torch.Tensor]) -> str:
    return "torchvision layout"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the rest of the package needs to know about one backbone."""

    #: Canonical name (torchvision's spelling where torchvision has the network).
    name: str
    #: ``build(last_conv_stride)`` -> the convolutional trunk, ``[N, 3, H, W]`` -> ``[N, feature_dim, h, w]``.
    build: Callable[[int], nn.Module]
    feature_dim: int
    #: The ImageNet normalisation the trunk was trained with, for RGB pixels in [0, 1]: ``(x - mean) / std``.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: Key of the first convolution's weight in an ImageNet file of this backbone (recognises meta-less files).
    first_conv_key: str
    #: Key prefix of the ImageNet classifier (dropped: re-ID uses the pooled trunk).
    classifier_prefix: str
    #: The ImageNet checkpoint filter: ImageNet state_dict (any layout the backbone reads) -> trunk keys,
    #: classifier dropped.
    imagenet_to_trunk: Callable[[StateDict], StateDict]
    #: Other spellings ``--net`` and stored files may use (``mobilenetV2``, the original's).
    aliases: tuple[str, ...] = ()
    #: The values ``--last_conv_stride`` may take; a backbone without a last-stride switch has ``(1,)``.
    last_conv_strides: tuple[int, ...] = (1,)
    #: torchvision's ImageNet weights (``--net_pretrained_path imagenet``), or None ...
    imagenet_weights: WeightsEnum | None = None
    #: ... and then the name of the ImageNet file expected in torch's hub cache, ``$TORCH_HOME/hub/checkpoints/``.
    imagenet_file: str = ""
    #: Trunk-level state_dict in an older layout (e.g. the original's MobileNet-V2) -> the trunk's own keys.
    normalize_trunk: Callable[[StateDict], StateDict] = _identity
    #: A short name of the layout of an ImageNet state_dict, for log lines ("torchvision layout").
    describe_imagenet_layout: Callable[[StateDict], str] = _torchvision_layout
    #: Whether a meta-less state_dict holding this backbone's first convolution is this backbone's, from
    #: its shapes; for siblings sharing every key name (EfficientNet-Lite0/1/2). None: the key suffices.
    matches: Callable[[StateDict], bool] | None = None
    #: The module that registered it (named in the duplicate-name error).
    module: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def trunk_first_conv_key(self) -> str:
        """:attr:`first_conv_key` as the trunk names it (the ImageNet filter applied to that one key)."""
        return next(iter(self.imagenet_to_trunk({self.first_conv_key: torch.zeros(1)})))

    @property
    def imagenet_name(self) -> str:
        """``MobileNet_V2_Weights.IMAGENET1K_V1`` (torchvision's name) or the hub-cache file name."""
        if self.imagenet_weights is not None:
            return f"{type(self.imagenet_weights).__name__}.{self.imagenet_weights.name}"
        return self.imagenet_file

    def level_of(self, state: Mapping[str, torch.Tensor]) -> str | None:
        """Which level a state_dict of this backbone is at (``model``, ``trunk``, ``imagenet``), judged
        by where its first convolution is; None when it has none of them, or when :attr:`matches` says
        the shapes are a sibling's."""
        if self.matches is not None and not self.matches(state):
            return None
        if MODEL_TRUNK_PREFIX + self.trunk_first_conv_key in state:
            return "model"
        if self.trunk_first_conv_key in state and self.trunk_first_conv_key != self.first_conv_key:
            return "trunk"
        if self.first_conv_key in state:
            return "imagenet"
        return None

    def check_last_conv_stride(self, last_conv_stride: int) -> None:
        """Refuse a ``--last_conv_stride`` this backbone cannot honour (a one-line :class:`BpmError`),
        instead of recording a value that did nothing."""
        if last_conv_stride not in self.last_conv_strides:
            choices = " or ".join(str(s) for s in self.last_conv_strides)
            extra = " (it has no last-stride switch)" if len(self.last_conv_strides) == 1 else ""
            raise BpmError(f"--last_conv_stride {last_conv_stride}: --net {self.name} takes {choices}{extra}")


_BACKBONES: dict[str, BackboneSpec] = {}  # canonical name -> spec, in registration order
_ALIASES: dict[str, str] = {}             # every accepted name -> canonical name


def register_backbone(name: str, *, aliases: tuple[str, ...] = (), feature_dim: int,
                      mean: tuple[float, float, float], std: tuple[float, float, float], first_conv_key: str,
                      classifier_prefix: str, imagenet_to_trunk: Callable[[StateDict], StateDict],
                      last_conv_strides: tuple[int, ...] = (1,), imagenet_weights: WeightsEnum | None = None,
                      imagenet_file: str = "", normalize_trunk: Callable[[StateDict], StateDict] = _identity,
                      describe_imagenet_layout: Callable[[StateDict], str] = _torchvision_layout,
                      matches: Callable[[StateDict], bool] | None = None) -> Callable[[Builder], Builder]:
    """Register the decorated builder (``builder(last_conv_stride) -> trunk``) as backbone ``name``.

    A name or alias already taken is refused (:class:`BpmError` naming both modules): two files
    must never silently decide what ``--net X`` means. See :class:`BackboneSpec` for the fields.

    Args:
        name: the canonical name (``--net``'s choice, what files record).
        aliases: further names ``--net`` accepts (e.g. the original's ``mobilenetV2``).
        feature_dim: channels of the trunk's last feature map (the embedding size without a neck).
        mean: per-channel input mean (RGB, 0..1 pixels) of the backbone's ImageNet training.
        std: per-channel input standard deviation, likewise.
        first_conv_key: the key of the first convolution's weight in an ImageNet file.
        classifier_prefix: the key prefix of the ImageNet classifier (dropped for re-ID).
        imagenet_to_trunk: turns an ImageNet state_dict into trunk keys.
        last_conv_strides: the ``--last_conv_stride`` values the trunk honours.
        imagenet_weights: torchvision's weights entry, for ``--net_pretrained_path imagenet``.
        imagenet_file: the hub-cache file name when there is no torchvision entry.
        normalize_trunk: maps other trunk layouts onto this builder's keys.
        describe_imagenet_layout: names an ImageNet file's layout for log lines.
        matches: tells siblings that share every key name apart by shapes (None: the key suffices).

    Returns:
        The decorator; it returns the builder unchanged.
    """
    def decorate(builder: Builder) -> Builder:
        spec = BackboneSpec(
            name=name, build=builder, feature_dim=feature_dim, mean=tuple(mean), std=tuple(std),
            first_conv_key=first_conv_key, classifier_prefix=classifier_prefix, imagenet_to_trunk=imagenet_to_trunk,
            aliases=tuple(aliases), last_conv_strides=tuple(last_conv_strides), imagenet_weights=imagenet_weights,
            imagenet_file=imagenet_file, normalize_trunk=normalize_trunk,
            describe_imagenet_layout=describe_imagenet_layout, matches=matches,
            module=getattr(builder, "__module__", ""),
        )
        add_backbone(spec)
        return builder

    return decorate


def add_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Register a ready :class:`BackboneSpec` (what :func:`register_backbone` does with its arguments)."""
    if spec.imagenet_weights is None and not spec.imagenet_file:
        raise BpmError(f"backbone {spec.name!r}: declare imagenet_weights (torchvision) or imagenet_file "
                       "(a file name in the torch hub cache)")
    for alias in spec.names:
        if alias in _ALIASES:
            owner = _BACKBONES[_ALIASES[alias]]
            raise BpmError(f"backbone name {alias!r} of {spec.module or spec.name} is already registered by "
                           f"{owner.module or owner.name} ({owner.name}); choose another name")
    _BACKBONES[spec.name] = spec
    _ALIASES.update({alias: spec.name for alias in spec.names})
    return spec


def _load_builtin() -> None:
    importlib.import_module(BACKBONE_PACKAGE)  # its modules register themselves on import


def list_backbones() -> list[str]:
    """Canonical names of the registered backbones, in registration order.

    Returns:
        ``["mobilenet_v2", "resnet50", ...]``: built-in backbones and any registered since.
    """
    _load_builtin()
    return list(_BACKBONES)


def backbone_choices() -> list[str]:
    """Every name ``--net`` accepts: canonical names, then aliases."""
    _load_builtin()
    return list(_BACKBONES) + [a for a, canonical in _ALIASES.items() if a != canonical]


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered as ``name`` (or an alias of it); an unknown name is a one-line :class:`BpmError`."""
    _load_builtin()
    try:
        return _BACKBONES[_ALIASES[name]]
    except (KeyError, TypeError):
        raise BpmError(f"--net: unknown network {name!r}; expected one of {', '.join(_BACKBONES)}") from None


def canonical_name(name: str) -> str:
    """``mobilenetV2`` -> ``mobilenet_v2``: the name files written today record."""
    return get_backbone(name).name


def backbones_in(state: Mapping[str, torch.Tensor]) -> list[tuple[BackboneSpec, str]]:
    """(spec, level) of every registered backbone whose first convolution the state_dict holds.

    Only for files that do not record their network (the original's, ImageNet files): two
    backbones sharing a first layer (ResNet-50 and a ResNet-101) both match, and the caller
    must then be told the network; siblings sharing every key name declare :attr:`BackboneSpec.matches`
    (EfficientNet-Lite0/1/2: blocks and width), so that only the right one is found.
    """
    _load_builtin()
    found = []
    for spec in _BACKBONES.values():
        level = spec.level_of(state)
        if level is not None:
            found.append((spec, level))
    return found


def split_model_state(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """(trunk-level state of the ``base.*`` keys, the other keys) of a model-level state_dict."""
    trunk = {k[len(MODEL_TRUNK_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_TRUNK_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(MODEL_TRUNK_PREFIX)}
    return trunk, rest
