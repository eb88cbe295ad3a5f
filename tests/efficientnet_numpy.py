"""An independent NumPy forward pass of EfficientNet-Lite, straight from a published-layout state_dict.

It shares no code with :mod:`bpm.models.efficientnet_lite`: the architecture is read from the
state_dict (blocks, kernels, channels from the weight shapes; a stage starts where the output
width changes) plus the one fact shapes cannot give, each stage's first stride. Padding is TF's
"SAME" rule written out in general form; arithmetic is float64. Used by the tests (random
weights) and by ``bench/check_efficientnet_lite.py`` (the real files).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet-B0's stages, first block of each
EPS = 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME": output ceil(size / stride); the odd pixel of the total pad goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    (top, bottom), (left, right) = same_padding(x.shape[1], kernel, stride), same_padding(x.shape[2], kernel, stride)
    return np.pad(x, ((0, 0), (top, bottom), (left, right)))


def conv(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Dense convolution of ``x`` [C, H, W] by ``weight`` [O, C, k, k] (im2col), TF SAME padding."""
    out_c, in_c, k, _ = weight.shape
    xp = _pad(x, k, stride)
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    cols = np.empty((in_c, k, k, ho, wo))
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return (weight.reshape(out_c, -1) @ cols.reshape(-1, ho * wo)).reshape(out_c, ho, wo)


def depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Per-channel convolution of ``x`` [C, H, W] by ``weight`` [C, 1, k, k], TF SAME padding."""
    k = weight.shape[-1]
    xp = _pad(x, k, stride)
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    out = np.zeros((x.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            out += weight[:, 0, i, j, None, None] * xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return out


def batchnorm(x: np.ndarray, p: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    scale = p[prefix + "weight"] / np.sqrt(p[prefix + "running_var"] + EPS)
    return x * scale[:, None, None] + (p[prefix + "bias"] - p[prefix + "running_mean"] * scale)[:, None, None]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def block_count(p: Mapping[str, np.ndarray]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in p if k.startswith("_blocks."))


def features(p: Mapping[str, np.ndarray], image: np.ndarray, last_stride: int = 2) -> np.ndarray:
    """[1280, h, w] after the head conv of one image ``image`` [3, H, W] already normalised.

    ``last_stride``: the first stride of the 6th stage (2 as published; 1 is the re-ID variant).
    """
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    x = relu6(batchnorm(conv(image.astype(np.float64), p["_conv_stem.weight"], 2), p, "_bn0."))
    strides = list(STAGE_STRIDES)
    strides[5] = last_stride
    stage, width = -1, None
    for b in range(block_count(p)):
        pre = f"_blocks.{b}."
        out_c = p[pre + "_project_conv.weight"].shape[0]
        first = out_c != width
        if first:
            stage, width = stage + 1, out_c
        stride = strides[stage] if first else 1
        h = x
        if pre + "_expand_conv.weight" in p:
            h = relu6(batchnorm(conv(h, p[pre + "_expand_conv.weight"], 1), p, pre + "_bn0."))
        h = relu6(batchnorm(depthwise(h, p[pre + "_depthwise_conv.weight"], stride), p, pre + "_bn1."))
        h = batchnorm(conv(h, p[pre + "_project_conv.weight"], 1), p, pre + "_bn2.")
        if h.shape == x.shape and not first:
            h = h + x
        x = h
    return relu6(batchnorm(conv(x, p["_conv_head.weight"], 1), p, "_bn1."))


def logits(p: Mapping[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    """ImageNet logits of one normalised image [3, H, W]."""
    pooled = features(p, image).mean(axis=(1, 2))
    return np.asarray(p["_fc.weight"], dtype=np.float64) @ pooled + np.asarray(p["_fc.bias"], dtype=np.float64)


def normalise(rgb_0_255: np.ndarray) -> np.ndarray:
    """RGB 0..255 [H, W, 3] -> the network's input [3, H, W]: (x - 127) / 128."""
    return ((rgb_0_255.astype(np.float64) - 127.0) / 128.0).transpose(2, 0, 1)
