"""Unlabelled person crops from a user's own cameras, for ``bpm train --distill_extra``.

An edge user has hours of video from the cameras the model will serve and no identity labels.
The distillation terms can learn from such crops (the teacher's embedding is their only target),
so they are the cheapest way to show a student the new camera network before it is deployed. This
module runs the person detector on every ``every``-th frame and keeps the boxes a re-ID crop can be
made of: confident, tall enough not to be upsampled blur at the model's input, taller than wide
(a standing or walking person, not a detector's fragment), and not cut by the frame's edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from bpm.errors import BpmError
from bpm.stream.detectors import Detector
from bpm.stream.sources import Source


@dataclass(frozen=True)
class CropRules:
    """Which detections become crops. ``max_frames`` 0 reads each camera to its end."""

    every: int = 10
    min_height: int = 64
    min_score: float = 0.5
    min_aspect: float = 1.2
    edge: int = 2
    max_frames: int = 0

    def __post_init__(self) -> None:
        checks = (("--every", self.every >= 1, "a frame step >= 1"),
                  ("--min_height", self.min_height >= 1, "a height in pixels >= 1"),
                  ("--score", 0 < self.min_score <= 1, "a detector score in (0, 1]"),
                  ("--min_aspect", self.min_aspect > 0, "a height / width ratio > 0"),
                  ("--max_frames", self.max_frames >= 0, "a frame count >= 0 (0: all)"))
        for flag, ok, expected in checks:
            if not ok:
                raise BpmError(f"{flag}: expected {expected}")


def kept_boxes(boxes: np.ndarray, scores: np.ndarray, frame_hw: tuple[int, int], rules: CropRules) -> np.ndarray:
    """Integer ``x1, y1, x2, y2`` rows of the detections ``rules`` keep, in frame pixels."""
    if not len(boxes):
        return np.zeros((0, 4), np.int64)
    height, width = frame_hw
    x1, y1, x2, y2 = np.round(boxes).astype(np.int64).T
    box_h, box_w = y2 - y1, x2 - x1
    keep = ((scores >= rules.min_score) & (box_h >= rules.min_height) & (box_w > 0)
            & (box_h >= rules.min_aspect * box_w)
            & (x1 >= rules.edge) & (y1 >= rules.edge) & (x2 <= width - rules.edge) & (y2 <= height - rules.edge))
    return np.stack([x1, y1, x2, y2], axis=1)[keep]


def harvest_crops(source: Source, detector: Detector, out: str | Path, rules: CropRules = CropRules(),
                  log: Callable[[str], None] = lambda line: None) -> int:
    """Write ``out/<camera>/<camera>_<frame>_<k>.jpg`` for the kept detections of every ``rules.every``-th
    frame of ``source``; returns how many crops were written."""
    folder = Path(out) / source.name
    folder.mkdir(parents=True, exist_ok=True)
    written = frames_read = 0
    for frame in source.frames():
        frames_read += 1
        found = detector(frame.image)
        for k, (x1, y1, x2, y2) in enumerate(kept_boxes(found.boxes, found.scores, frame.image.shape[:2], rules)):
            path = folder / f"{source.name}_{frame.index:06d}_{k}.jpg"
            if not cv2.imwrite(str(path), frame.image[y1:y2, x1:x2]):
                raise BpmError(f"--out: cannot write {path}")
            written += 1
        if rules.max_frames and frame.index >= rules.max_frames:
            break
        if source.skip(rules.every - 1) < rules.every - 1:
            break
    log(f"{source.name}: {written} crops from {frames_read} frames (every {rules.every})")
    return written
