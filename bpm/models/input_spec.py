"""What a model expects as input and how its features are compared: one frozen :class:`InputSpec`.

Why one object: the input size, the pixel normalisation and the test-time L2 normalisation were
decided by each caller (five places for the size, a module global for mean/std, ``bpm test`` alone
normalising BNNeck features), so two commands could embed the same images differently. The spec
is resolved once, when a model is loaded (:func:`bpm.load_model`), in this order::

    an explicit switch / keyword  >  the file's own record (bpm.models.meta)  >  the backbone's default

and then travels with the model into preprocessing, extraction, evaluation, export and every file
written (checkpoints, weights files, ONNX metadata, features files).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from bpm.errors import BpmError
from bpm.models.necks import normalizes_at_test

#: The ImageNet mean/std of ResNet-50 and MobileNet-V2 as the original project used them (torchvision
#: publishes 0.485, 0.456, 0.406); kept to the digit so that every number stays as it was.
IMAGENET_MEAN = (0.486, 0.459, 0.408)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = (256, 128)
# Input sizes beyond this are a typo, not a person crop (torch would try to allocate terabytes).
MAX_SIDE = 4096
COLOR_ORDERS = ("RGB", "BGR")
INTERPOLATIONS = ("bilinear",)


def check_input_size(size: Any) -> tuple[int, int]:
    """``--resize_h_w`` (and ``FeatureExtractor(resize_h_w=...)``): two whole sides of 1..MAX_SIDE pixels.

    Args:
        size: the requested ``(height, width)``, as given (a tuple, list or the switch's parsed value).

    Returns:
        ``(height, width)`` as ints.

    Raises:
        BpmError: one line naming ``--resize_h_w`` and what was expected.
    """
    try:
        sides = tuple(size)
        ok = len(sides) == 2 and all(float(v).is_integer() and 1 <= v <= MAX_SIDE for v in sides)
    except (TypeError, ValueError):
        sides, ok = size, False
    if not ok:
        raise BpmError(f"--resize_h_w: expected '(height, width)' with each side from 1 to {MAX_SIDE} pixels, "
                       f"got {sides!r}")
    return int(sides[0]), int(sides[1])


@dataclass(frozen=True)
class InputSpec:
    """A model's input and test-time feature handling.

    ``mean``/``std`` apply to pixels scaled to [0, 1]: ``(x / 255 - mean) / std``; EfficientNet-Lite's
    ``(x - 127) / 128`` is ``mean = 127/255``, ``std = 128/255``. ``raw_pixels``: the model (an ONNX
    graph exported with ``--bake_normalization``) takes 0..255 pixels and normalises inside.
    ``normalize_features``: L2-normalise features before comparing them (default: yes with a BNNeck).
    """

    net: str
    resize_h_w: tuple[int, int] = DEFAULT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color: str = "RGB"
    interpolation: str = "bilinear"
    feature_dim: int = 0
    last_conv_stride: int = 1
    pooling: str = "avg"
    neck: str = "none"
    normalize_features: bool = False
    raw_pixels: bool = False

    def __post_init__(self) -> None:
        if self.color not in COLOR_ORDERS:
            raise BpmError(f"input colour order {self.color!r}: expected one of {', '.join(COLOR_ORDERS)}")
        if self.interpolation not in INTERPOLATIONS:
            raise BpmError(f"input interpolation {self.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")

    @classmethod
    def for_size(cls, resize_h_w: tuple[int, int], net: str = "") -> "InputSpec":
        """A spec knowing only a size (a caller without a model file): the ResNet-50/MobileNet-V2 normalisation."""
        return cls(net=net, resize_h_w=(int(resize_h_w[0]), int(resize_h_w[1])))

    def with_(self, **changes: Any) -> "InputSpec":
        return replace(self, **changes)

    def to_meta(self) -> dict[str, Any]:
        """The spec as plain JSON-able values (the ``input`` record of checkpoints and weights files)."""
        meta = asdict(self)
        meta["resize_h_w"] = [int(v) for v in self.resize_h_w]
        meta["mean"] = [float(v) for v in self.mean]
        meta["std"] = [float(v) for v in self.std]
        del meta["raw_pixels"]  # a property of an exported graph (its own metadata says so), not of the model
        return meta

    def describe_pixels(self) -> str:
        """One line for ONNX metadata and logs: what the input tensor holds."""
        if self.raw_pixels:
            return f"{self.color} float NCHW, 0..255"
        return f"{self.color} float NCHW, (x/255 - {list(self.mean)}) / {list(self.std)}"


def as_input_spec(spec_or_size: "InputSpec | tuple[int, int]") -> InputSpec:
    """An :class:`InputSpec` as is; a bare ``(h, w)`` (tests, benches, a tiny network) as :meth:`InputSpec.for_size`."""
    return spec_or_size if isinstance(spec_or_size, InputSpec) else InputSpec.for_size(spec_or_size)


# --------------------------------------------------------------------------------------- resolution

_SWITCH = {"resize_h_w": "--resize_h_w", "last_conv_stride": "--last_conv_stride", "net": "--net",
           "normalize_features": "--normalize_feature"}


def _typed(name: str, value: Any) -> Any:
    """A stored or given value in the field's type (JSON gives lists and ints)."""
    if name == "resize_h_w":
        return (int(value[0]), int(value[1]))
    if name in ("mean", "std"):
        if len(value) != 3:
            raise BpmError(f"input {name}: expected 3 values (one per colour channel), got {list(value)}")
        return tuple(float(v) for v in value)
    if name in ("last_conv_stride", "feature_dim"):
        return int(value)
    if name in ("normalize_features", "raw_pixels"):
        return bool(value)
    return str(value)


def _show(value: Any) -> str:
    return f"({value[0]}, {value[1]})" if isinstance(value, tuple) and len(value) == 2 else str(value)


def resolve_input_spec(backbone, meta: Mapping[str, Any], overrides: Mapping[str, Any], source: str | Path,
                       architecture: Mapping[str, str] | None = None) -> InputSpec:
    """The spec of a model of ``backbone`` (a :class:`~bpm.models.registry.BackboneSpec`) loaded from ``source``.

    Each field: ``overrides[field]`` when not None (with a one-line warning when it differs from
    the file's record), else ``meta[field]`` (the file's record), else the default: the backbone's
    normalisation and feature size, 256x128, stride 1, ``architecture`` (pooling and neck read from
    a meta-less file's keys), and L2 normalisation at test time exactly when there is a BNNeck.
    A stride the backbone has no switch for is refused when asked for, and ignored in an older
    file's record (it never changed the network).
    """
    defaults: dict[str, Any] = {
        "net": backbone.name, "mean": backbone.mean, "std": backbone.std, "feature_dim": backbone.feature_dim,
        "resize_h_w": DEFAULT_SIZE, "last_conv_stride": 1, "color": "RGB", "interpolation": "bilinear",
        **(architecture or {}),
    }
    known = {f.name for f in fields(InputSpec)} - {"raw_pixels"}
    stored = {k: _typed(k, v) for k, v in meta.items() if k in known and v is not None}
    stored.pop("net", None)  # the caller resolved the network (it decides which backbone this is)
    stored.pop("feature_dim", None)  # the backbone's, always
    if stored.get("last_conv_stride", 1) not in backbone.last_conv_strides:
        stored["last_conv_stride"] = 1  # e.g. MobileNet-V2 trained with --last_conv_stride 2, which did nothing
    values = {**defaults, **stored}
    if overrides.get("last_conv_stride") is not None:
        backbone.check_last_conv_stride(int(overrides["last_conv_stride"]))  # refused before any warning
    for name, given in overrides.items():
        if given is None or name not in known or name == "net":
            continue
        value = _typed(name, given)
        if name in stored and stored[name] != value:
            print(f"warning: {_SWITCH.get(name, name)} {_show(value)} differs from the {_show(stored[name])} that "
                  f"{source} was trained with; using {_show(value)}", file=sys.stderr)
        values[name] = value
    backbone.check_last_conv_stride(values["last_conv_stride"])
    values.setdefault("pooling", "avg")
    values.setdefault("neck", "none")
    if "normalize_features" not in values:
        values["normalize_features"] = normalizes_at_test(values["neck"])
    return InputSpec(**{k: v for k, v in values.items() if k in known})


def input_spec_of_model(model, resize_h_w: tuple[int, int]) -> InputSpec:
    """The spec of a model built in this process (a training run): its backbone's normalisation, its
    neck and pooling. A model that is not a :class:`~bpm.models.reid.ReidModel` of a registered backbone
    (tests' tiny networks, a user's module) gets the default normalisation."""
    from bpm.models.registry import get_backbone

    net = getattr(model, "net", None)
    architecture = dict(getattr(model, "architecture", {}) or {})
    neck = architecture.get("neck", "none")
    common = {"resize_h_w": (int(resize_h_w[0]), int(resize_h_w[1])),
              "last_conv_stride": int(getattr(model, "last_conv_stride", 1)),
              "pooling": architecture.get("pooling", "avg"), "neck": neck, "normalize_features": normalizes_at_test(neck),
              "feature_dim": int(getattr(model, "feature_dim", 0) or 0)}
    if net is None:
        return InputSpec(net="", **common)
    backbone = get_backbone(net)
    return InputSpec(net=backbone.name, mean=backbone.mean, std=backbone.std, **common)
