"""Image pipelines for training and testing, built from torchvision transforms.

Size, pixel normalisation and colour order come from the model's
:class:`~bpm.models.input_spec.InputSpec` (backbones differ: EfficientNet-Lite expects
``(x - 127) / 128``); resizing is bilinear to a fixed (h, w) without keeping the aspect ratio, as
the original did. A bare ``(h, w)`` instead of a spec means the ResNet-50/MobileNet-V2
normalisation. The random training steps draw from Python's and torch's global generators, as torchvision's do; the training loader runs them inside
:func:`bpm.data.loader.sample_randomness`, seeded per sample and restored afterwards.
"""
from __future__ import annotations

import random
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from bpm.data.images import ImageLike, to_pil
from bpm.models.input_spec import InputSpec, as_input_spec


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


class SwapRedBlue:
    """RGB -> BGR on a PIL image, for backbones trained on BGR input (a class, so data-loader workers can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return Image.merge("RGB", image.convert("RGB").split()[::-1])


def train_transform(
    spec: InputSpec | tuple[int, int],
    mirror: bool = True,
    crop_prob: float = 0.0,
    crop_ratio: float = 1.0,
    erase: bool = False,
    erase_prob: float = 0.2,
    pad_crop: int = 0,
) -> T.Compose:
    """``pad_crop``: zero-pad by this many pixels and crop back to ``resize_h_w`` at a random place
    (the strong baselines' small-translation augmentation; 10 px at 256x128)."""
    spec = as_input_spec(spec)
    resize_h_w = spec.resize_h_w
    steps: list = [RandomCropResize(crop_prob, crop_ratio), T.Resize(resize_h_w, T.InterpolationMode.BILINEAR)]
    if mirror:
        steps.append(T.RandomHorizontalFlip())
    if pad_crop > 0:
        steps += [T.Pad(pad_crop), T.RandomCrop(resize_h_w)]
    if spec.color == "BGR":
        steps.append(SwapRedBlue())
    steps += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    if erase:
        # The original's random erasing: area fraction in [0.02, 0.4], aspect ratio in [0.3, 1/0.3].
        steps.append(T.RandomErasing(p=erase_prob, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3)))
    return T.Compose(steps)


def model_input(image: Image.Image, spec: InputSpec | tuple[int, int]) -> np.ndarray:
    """The one definition of test-time preprocessing: ``[3, H, W]`` float32 from an RGB image.

    PIL bilinear resize to the spec's ``(h, w)`` (aspect ratio not kept, as the original), channels in
    the spec's colour order, then ``/255`` and the spec's mean/std (0..255 pixels for a spec with
    ``raw_pixels``: graphs that normalise inside). The PyTorch test pipeline (:func:`test_transform`),
    :class:`bpm.FeatureExtractor`, INT8 calibration and the ONNX runtime all call this, so every
    backend sees bit-identical input.
    """
    spec = as_input_spec(spec)
    h, w = spec.resize_h_w
    pixels = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
    if spec.color == "BGR":
        pixels = np.ascontiguousarray(pixels[::-1])
    if spec.raw_pixels:
        return pixels
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    return (pixels / 255.0 - mean) / std


class TestTransform:
    """``model_input`` as a torchvision-style transform (PIL image -> tensor) for data loaders."""

    def __init__(self, spec: InputSpec | tuple[int, int]) -> None:
        self.spec = as_input_spec(spec)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(model_input(image, self.spec)))

    def __repr__(self) -> str:
        return f"TestTransform(resize_h_w={self.spec.resize_h_w}, mean={self.spec.mean}, std={self.spec.std})"


def test_transform(spec: InputSpec | tuple[int, int]) -> TestTransform:
    return TestTransform(spec)


def image_batch(items: Iterable[ImageLike], spec: InputSpec | tuple[int, int]) -> np.ndarray:
    """``[N, 3, H, W]`` float32 of :func:`model_input` under the model's input spec."""
    spec = as_input_spec(spec)
    arrays = [model_input(to_pil(item), spec) for item in items]
    if not arrays:
        return np.zeros((0, 3, *spec.resize_h_w), dtype=np.float32)
    return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)
