"""``--save_video``: each camera's frames with identity boxes, as ``video/<camera>.mp4`` (OpenCV's mp4v)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def colour(identity: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per identity (golden-ratio hues)."""
    hue = int((identity * 0.618033988749895 % 1.0) * 179)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


class AnnotatedVideo:
    """Writes annotated frames; opened lazily at the first frame (its size decides the video's)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray, boxes: list[tuple[int, np.ndarray]]) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (frame.shape[1], frame.shape[0]))
        image = frame.copy()
        for identity, box in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(image, (x1, y1), (x2, y2), colour(identity), 2)
            cv2.putText(image, str(identity) if identity > 0 else "?", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, colour(identity), 1, cv2.LINE_AA)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
