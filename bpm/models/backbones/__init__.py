"""Backbones, trimmed to their convolutional trunk: one module per family, each registering its
builders with :func:`bpm.models.registry.register_backbone`.

Every module of this package is imported when the registry is first asked, so adding a backbone
is adding one file here (and its test); nothing else lists them. Attribute names of the trunks
are chosen so that state_dict keys match the original project's released weights
(``base.base.*`` for ResNet-50, ``base.features.*`` for MobileNet-V2) once wrapped by
:class:`bpm.models.reid.ReidModel`; they must not change. Trunks start random;
:mod:`bpm.models.imagenet` / :mod:`bpm.models.weights` load weights on request.
"""
from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from bpm.models.registry import get_backbone

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")


def build_backbone(net: str, last_conv_stride: int = 1) -> nn.Module:
    """The trunk of the backbone registered as ``net`` (random weights); unknown names, and a last
    stride the backbone has no switch for, are one-line errors."""
    spec = get_backbone(net)
    spec.check_last_conv_stride(last_conv_stride)
    return spec.build(last_conv_stride)
