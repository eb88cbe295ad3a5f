"""Crops to embeddings on the stream's hot path: the extractor's numbers, without its per-call overhead.

:class:`bpm.FeatureExtractor` serves every caller (paths, PIL images, tensors, torch and ONNX
backends, flip), and for a handful of small crops per frame its generality costs more than the
re-ID network itself: a PIL image and a normalisation per crop, a torch round trip per call. For
an exported ONNX model without flip, :func:`crop_embedder` computes the same numbers directly:
each crop is resized by PIL exactly as :func:`bpm.data.transforms.model_input` does, the batch is
normalised in one operation (element for element the same arithmetic), the session is run on the
same batches (``batch_size`` at a time) and the features normalised by the same function. Other
models (checkpoints, flip) go through the extractor unchanged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from bpm.evaluation.features import l2_normalize
from bpm.models.input_spec import InputSpec

Embedder = Callable[[list[np.ndarray]], np.ndarray]  # RGB HxWx3 uint8 crops -> (N, D) float32


def crop_batch(crops: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """``[N, 3, H, W]`` float32 network input of RGB uint8 crops, equal to ``image_batch`` of them."""
    h, w = spec.resize_h_w
    pixels = np.stack([np.asarray(Image.fromarray(crop, "RGB").resize((w, h), Image.BILINEAR)) for crop in crops])
    pixels = pixels.astype(np.float32).transpose(0, 3, 1, 2)
    if spec.color == "BGR":
        pixels = pixels[:, ::-1]
    if spec.raw_pixels:
        return np.ascontiguousarray(pixels)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((pixels / 255.0 - mean) / std)


def crop_embedder(extractor) -> Embedder:
    """``extractor``'s embedding of RGB crops; for an ONNX model without flip, computed directly."""
    runner = getattr(extractor, "runner", None)
    if runner is None or extractor.backend != "onnx" or extractor.flip:
        return extractor
    spec, batch_size, normalize = extractor.input_spec, extractor.batch_size, extractor.normalize

    def embed(crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, extractor.feature_dim), np.float32)
        features = np.concatenate([runner(crop_batch(crops[i:i + batch_size], spec))
                                   for i in range(0, len(crops), batch_size)])
        return l2_normalize(features) if normalize else features

    return embed
