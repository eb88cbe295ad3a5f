"""MOTChallenge text files: ``frame, id, left, top, width, height, conf, x, y, z`` per line, frames from 1.

``det.txt`` has id -1; ``gt.txt`` and tracker results carry ids. ``--detections DIR`` and
``--eval GT`` find a camera's file as ``DIR/<camera>/det/det.txt`` (``gt/gt.txt``), the MOTChallenge
layout, or ``DIR/<camera>.txt``.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bpm.errors import BpmError
from bpm.stream.detectors import Detections


def read_mot(path: str | Path) -> np.ndarray:
    """``(N, 7)`` float64 rows ``frame, id, left, top, width, height, conf``; an empty file gives ``(0, 7)``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BpmError(f"{path}: cannot read it ({exc.strerror})") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.replace(" ", "").split(",")
        try:
            values = [float(v) for v in fields[:7]]
        except ValueError:
            values = []
        if len(values) < 6:
            raise BpmError(f"{path}:{number}: expected 'frame, id, left, top, width, height[, conf, ...]', got {line!r}")
        rows.append(values + [1.0] * (7 - len(values)))
    return np.asarray(rows, np.float64).reshape(-1, 7)


def find_camera_file(root: str | Path, camera: str, kind: str) -> Path:
    """``root/<camera>/<kind>/<kind>.txt`` or ``root/<camera>.txt`` (kind: det or gt)."""
    root = Path(root)
    for candidate in (root / camera / kind / f"{kind}.txt", root / f"{camera}.txt"):
        if candidate.is_file():
            return candidate
    raise BpmError(f"{root}: no {kind} file for camera {camera!r} "
                   f"(expected {root / camera / kind / f'{kind}.txt'} or {root / f'{camera}.txt'})")


class DetectionFile:
    """Detections read from a ``det.txt`` instead of a detector: ``detections(frame_index)``."""

    def __init__(self, path: str | Path, min_score: float = -np.inf) -> None:
        rows = read_mot(path)
        rows = rows[rows[:, 6] >= min_score]
        self.by_frame: dict[int, Detections] = {}
        grouped: dict[int, list[np.ndarray]] = defaultdict(list)
        for row in rows:
            grouped[int(row[0])].append(row)
        for frame, items in grouped.items():
            block = np.stack(items)
            boxes = np.concatenate([block[:, 2:4], block[:, 2:4] + block[:, 4:6]], axis=1)
            self.by_frame[frame] = Detections(boxes.astype(np.float32), block[:, 6].astype(np.float32))

    def __call__(self, frame_index: int) -> Detections:
        return self.by_frame.get(frame_index, Detections.empty())


def format_rows(rows: list[tuple[int, int, float, float, float, float, float]]) -> str:
    """MOT lines for ``(frame, id, x1, y1, x2, y2, score)`` tuples, sorted by frame then id."""
    lines = [f"{f},{i},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1"
             for f, i, x1, y1, x2, y2, s in sorted(rows, key=lambda r: (r[0], r[1]))]
    return "\n".join(lines) + ("\n" if lines else "")
