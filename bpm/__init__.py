"""person-reid: mixed-precision person re-identification.

The public API is re-exported here lazily, so ``import bpm`` (and the ``bpm synth`` command)
stays fast and does not import torch until a model is needed.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "bpm.models.reid",
    "ReidModel": "bpm.models.reid",
    "evaluate": "bpm.evaluation",
    "re_ranking": "bpm.evaluation",
    "build_dataset": "bpm.data.datasets",
    "PrecisionPolicy": "bpm.precision",
    "BpmError": "bpm.errors",
    "FeatureExtractor": "bpm.inference",
    "load_model": "bpm.models.loading",
    "InputSpec": "bpm.models.input_spec",
    "list_backbones": "bpm.models.registry",
    "register_backbone": "bpm.models.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bpm' has no attribute {name!r}")
