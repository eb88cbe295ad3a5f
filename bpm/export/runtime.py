"""Features of images by an exported graph, through the one extraction path.

Graphs are loaded and run by :mod:`bpm.models.onnx_graph`; the arrays they take come from
:func:`bpm.data.transforms.image_batch`, the one pixel pipeline of calibration, verification,
benchmarks and :class:`bpm.FeatureExtractor`, so every format is measured on exactly the input it
will see in deployment.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bpm.data.images import ImageLike
from bpm.evaluation.features import embed_images
from bpm.models.onnx_graph import GraphModule, OnnxModel
from bpm.precision import PrecisionPolicy


def onnx_features(runner: OnnxModel, items: Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
    """Features of images by an exported graph's runner (ONNX or OpenVINO; its metadata gives input
    size and pixel scale), through the one extraction path: what ``bpm export`` verifies is what ``FeatureExtractor`` computes."""
    return embed_images(GraphModule(runner), items, PrecisionPolicy.create("O0"), runner.spec.input_spec, batch_size)
