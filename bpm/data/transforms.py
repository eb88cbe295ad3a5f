"""Image pipelines for training and testing, built from torchvision transforms.

Normalisation uses the original's mean/std; resizing is bilinear to a fixed (h, w) without
keeping the aspect ratio, as the original did.
"""
from __future__ import annotations

import random

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


def test_transform(resize_h_w: tuple[int, int]) -> T.Compose:
    return T.Compose([T.Resize(resize_h_w, T.InterpolationMode.BILINEAR), T.ToTensor(), T.Normalize(MEAN, STD)])
