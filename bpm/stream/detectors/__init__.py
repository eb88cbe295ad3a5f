"""Person detectors by family: one module per family registers a loader under its name.

Adding a detector family (another YOLO head, an SSD) is one file in this package that calls
:func:`register` at import time and is listed in ``_FAMILY_MODULES``; ``bpm stream --detector_family``
picks it. Every detector maps a BGR frame to person boxes in frame pixels.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from bpm.errors import BpmError

# family name -> module that registers it (imported on first use, so unused families cost nothing)
_FAMILY_MODULES: dict[str, str] = {"yolox": "bpm.stream.detectors.yolox"}
_LOADERS: dict[str, Callable[..., "Detector"]] = {}


@dataclass(frozen=True)
class Detections:
    """Person boxes of one frame: ``boxes`` (N, 4) float32 x1, y1, x2, y2 in frame pixels, ``scores`` (N,)."""

    boxes: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.scores)


class Detector(Protocol):
    def __call__(self, frame_bgr: np.ndarray) -> Detections: ...


def register(family: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Decorator: make ``loader(path, score_threshold=..., nms_threshold=..., threads=...)`` the family's loader."""
    def wrap(loader: Callable[..., Detector]) -> Callable[..., Detector]:
        _LOADERS[family] = loader
        return loader
    return wrap


def families() -> list[str]:
    return sorted(_FAMILY_MODULES)


def load_detector(path: str | Path, family: str = "yolox", **options: float | int) -> Detector:
    """The detector in ``path`` (an ONNX file) read by ``family``'s conventions."""
    if family not in _FAMILY_MODULES:
        raise BpmError(f"--detector_family: expected one of {', '.join(families())}, got {family!r}")
    if not Path(path).is_file():
        raise BpmError(f"--detector: {path} is not a file (expected an ONNX person detector)")
    importlib.import_module(_FAMILY_MODULES[family])
    return _LOADERS[family](path, **options)
