"""Image pipelines for training and testing, built from torchvision transforms.

Normalisation uses the original's mean/std; resizing is bilinear to a fixed (h, w) without
keeping the aspect ratio, as the original did. The random training steps draw from Python's and
torch's global generators, as torchvision's do; the training loader runs them inside
:func:`bpm.data.loader.sample_randomness`, seeded per sample and restored afterwards.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

MEAN = (0.486, 0.459, 0.408)
STD = (0.229, 0.224, 0.225)


class RandomCropResize:
    """With probability ``prob``, crop a box whose sides are a U(ratio, 1) fraction of the image, at a random place.

    This is the original's ``crop_prob``/``crop_ratio`` augmentation; ``ratio = 1`` disables it.
    The crop is resized back by the following ``Resize``.
    """

    def __init__(self, prob: float, ratio: float) -> None:
        self.prob = prob
        self.ratio = ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.ratio >= 1 or random.random() >= self.prob:
            return image
        w, h = image.size
        cw = max(1, round(w * random.uniform(self.ratio, 1)))
        ch = max(1, round(h * random.uniform(self.ratio, 1)))
        x, y = random.randint(0, w - cw), random.randint(0, h - ch)
        return image.crop((x, y, x + cw, y + ch))


def train_transform(
    resize_h_w: tuple[int, int],
    mirror: bool = True,
    crop_prob: float = 0.0,
    crop_ratio: float = 1.0,
    erase: bool = False,
    erase_prob: float = 0.2,
    pad_crop: int = 0,
) -> T.Compose:
    """``pad_crop``: zero-pad by this many pixels and crop back to ``resize_h_w`` at a random place
    (the strong baselines' small-translation augmentation; 10 px at 256x128)."""
    steps: list = [RandomCropResize(crop_prob, crop_ratio), T.Resize(resize_h_w, T.InterpolationMode.BILINEAR)]
    if mirror:
        steps.append(T.RandomHorizontalFlip())
    if pad_crop > 0:
        steps += [T.Pad(pad_crop), T.RandomCrop(resize_h_w)]
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    if erase:
        # The original's random erasing: area fraction in [0.02, 0.4], aspect ratio in [0.3, 1/0.3].
        steps.append(T.RandomErasing(p=erase_prob, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3)))
    return T.Compose(steps)


_MEAN = np.asarray(MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(STD, dtype=np.float32).reshape(3, 1, 1)


def model_input(image: Image.Image, resize_h_w: tuple[int, int], raw: bool = False) -> np.ndarray:
    """The one definition of test-time preprocessing: ``[3, H, W]`` float32 from an RGB image.

    PIL bilinear resize to ``(h, w)`` (aspect ratio not kept, as the original), then ``/255`` and
    the original's mean/std (or 0..255 pixels if ``raw``: for graphs that normalise inside). The
    PyTorch test pipeline (:func:`test_transform`), :class:`bpm.FeatureExtractor`, INT8
    calibration and the ONNX runtime all call this, so every backend sees bit-identical input.
    """
    h, w = resize_h_w
    pixels = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
    return pixels if raw else (pixels / 255.0 - _MEAN) / _STD


class TestTransform:
    """``model_input`` as a torchvision-style transform (PIL image -> tensor) for data loaders."""

    def __init__(self, resize_h_w: tuple[int, int]) -> None:
        self.resize_h_w = tuple(resize_h_w)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(model_input(image, self.resize_h_w)))

    def __repr__(self) -> str:
        return f"TestTransform(resize_h_w={self.resize_h_w})"


def test_transform(resize_h_w: tuple[int, int]) -> TestTransform:
    return TestTransform(resize_h_w)
