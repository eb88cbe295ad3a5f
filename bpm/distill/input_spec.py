"""``--teacher_input HxW[,rgb|bgr][,imagenet|tf|unit|raw]``: how a teacher from elsewhere wants its pixels.

A file from another project rarely says how it was trained to see images; our own exports do
(:mod:`bpm.export.onnx` metadata), others must be told. The spec is small on purpose: size, channel
order and one of the four pixel scalings that cover the public re-ID model zoos. Images reach
:meth:`TeacherInput.from_unit` as RGB floats in 0..1 already resized to the spec's size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bpm.errors import BpmError
from bpm.models.input_spec import MAX_SIDE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNELS = ("rgb", "bgr")
# imagenet: (u - mean) / std; tf: 2u - 1 = (x - 127.5) / 127.5; unit: u = x / 255; raw: x in 0..255.
SCALES = ("imagenet", "tf", "unit", "raw")
EXPECTED = "HxW[,rgb|bgr][,imagenet|tf|unit|raw] such as 256x128,rgb,imagenet"
_SIZE = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class TeacherInput:
    """A teacher's input: ``height`` x ``width`` pixels, channel order, pixel scaling."""

    height: int
    width: int
    channels: str = "rgb"
    scale: str = "imagenet"

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def text(self) -> str:
        """The canonical ``--teacher_input`` text (also part of the teacher cache's key)."""
        return f"{self.height}x{self.width},{self.channels},{self.scale}"

    def from_unit(self, images: np.ndarray) -> np.ndarray:
        """``[N, 3, H, W]`` RGB in 0..1 at this size -> the float32 array the teacher takes."""
        x = np.asarray(images, dtype=np.float32)
        if self.scale == "imagenet":
            x = (x - np.float32(IMAGENET_MEAN).reshape(1, 3, 1, 1)) / np.float32(IMAGENET_STD).reshape(1, 3, 1, 1)
        elif self.scale == "tf":
            x = x * 2 - 1
        elif self.scale == "raw":
            x = x * 255
        if self.channels == "bgr":
            x = x[:, ::-1]
        return np.ascontiguousarray(x, dtype=np.float32)


def parse_teacher_input(text: str) -> TeacherInput:
    """``256x128,rgb,imagenet`` (colour order and scaling may be left out: rgb, imagenet)."""
    parts = [p.strip().lower() for p in str(text).split(",")]
    size = _SIZE.match(parts[0]) if parts else None
    rest = parts[1:]
    channels = next((p for p in rest if p in CHANNELS), "rgb")
    scale = next((p for p in rest if p in SCALES), "imagenet")
    unknown = [p for p in rest if p not in CHANNELS + SCALES]
    repeated = sum(p in CHANNELS for p in rest) > 1 or sum(p in SCALES for p in rest) > 1
    if size is None or unknown or repeated or len(rest) > 2:
        raise BpmError(f"--teacher_input: expected {EXPECTED}, got {text!r}")
    height, width = int(size.group(1)), int(size.group(2))
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BpmError(f"--teacher_input: each side must be 1 to {MAX_SIDE} pixels, got {text!r}")
    return TeacherInput(height, width, channels, scale)
