"""Appearance in per-camera tracking: a track whose crops stop looking like its person is handed back or split.

ByteTrack (:mod:`bpm.stream.tracking`) links boxes by motion and overlap only, so two people who
meet and part in a way its constant-velocity model does not expect (they turn back, or stop and
go on) come out of the meeting with swapped tracks; the gallery cannot repair that, because each
track keeps the identity it was given. The installed trackers (``trackers`` 2.6: SORT, ByteTrack,
OC-SORT, BoT-SORT without re-ID) take no embeddings, so the check sits after the tracker:

* every ByteTrack track is mapped to a track of ours (the id the rest of the pipeline sees) that
  keeps the running mean of its person's unit embeddings;
* a box that overlaps another tracked box of the frame is *crowded*: its crop shows two people,
  so it neither updates a mean nor is checked;
* when a track leaves a crowd it is embedded on that frame (``wants_embedding``) and checked (only
  then: motion alone swaps people only where their boxes overlap, and the checks elsewhere would
  only risk false splits on edge-of-frame crops): an embedding further than ``threshold`` (cosine
  distance, 1 - cos) from its own track's mean is a *jump*. Measured with the demo MobileNet-V2
  INT8 on generated footage: same person vs own mean up to ~0.35 (crops cut at the frame edge),
  swapped people ~0.9; hence the default 0.5. The tracks that jumped in the same frame are matched to each other's means (Hungarian,
  on the cosine distance): a jump that fits another jumped track's mean below ``threshold``
  hands the ByteTrack track to that track (a swap undone); one that fits none starts a new track
  (a split), which the gallery then links to an identity like any other track.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bpm.stream.tracking import TrackedBox

DEFAULT_TRACK_THRESHOLD = 0.5
MIN_CHECKED = 2  # uncrowded embeddings a track needs before it is checked (one edge-of-frame crop is noisy)
CROWD_OVERLAP = 0.05  # share of a box covered by another tracked box that makes it crowded


def covered(boxes: np.ndarray) -> np.ndarray:
    """Per box, the largest share of its area that another box of ``boxes`` covers."""
    if len(boxes) < 2:
        return np.zeros((len(boxes),), np.float32)
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    np.fill_diagonal(inter, 0.0)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    return (inter / area[:, None]).max(axis=1)


@dataclass
class _Track:
    total: np.ndarray | None = None  # sum of the person's unit embeddings (uncrowded crops only)
    count: int = 0
    was_crowded: bool = False        # crowded since its last check


class AppearanceLinker:
    """One camera's ByteTrack ids -> appearance-checked track ids (see the module docstring)."""

    def __init__(self, threshold: float = DEFAULT_TRACK_THRESHOLD) -> None:
        self.threshold = threshold
        self._ours: dict[int, int] = {}       # ByteTrack id -> our track id
        self._tracks: dict[int, _Track] = {}
        self._next = 1
        self._crowded: np.ndarray = np.zeros((0,), bool)
        self._byte: list[int] = []            # this frame's ByteTrack ids, by row
        self.swaps = 0   # tracks handed back (counted per track)
        self.splits = 0

    def _new(self) -> int:
        self._next += 1
        self._tracks[self._next - 1] = _Track()
        return self._next - 1

    def assign(self, tracked: list[TrackedBox]) -> list[TrackedBox]:
        """The frame's boxes under our track ids; notes which boxes are crowded."""
        out = []
        self._byte = [item.track_id for item in tracked]
        for item in tracked:
            if item.track_id not in self._ours:
                self._ours[item.track_id] = self._new()
            out.append(replace(item, track_id=self._ours[item.track_id]))
        boxes = np.asarray([t.box for t in tracked], np.float32).reshape(-1, 4)
        self._crowded = covered(boxes) > CROWD_OVERLAP
        for item, crowded in zip(out, self._crowded):
            self._tracks[item.track_id].was_crowded |= bool(crowded)
        return out

    def wants_embedding(self, row: int, item: TrackedBox) -> bool:
        """Whether this box must be embedded for the check: its track just left a crowd."""
        track = self._tracks[item.track_id]
        return not self._crowded[row] and track.was_crowded and track.count >= MIN_CHECKED

    def check(self, tracked: list[TrackedBox], embeddings: dict[int, np.ndarray]) -> list[TrackedBox]:
        """Hand back or split the tracks whose uncrowded embedding jumped; update the tracks' means."""
        units = {row: e / max(float(np.linalg.norm(e)), 1e-12) for row, e in embeddings.items()
                 if not self._crowded[row]}
        jumped = []
        for row, unit in units.items():
            track = self._tracks[tracked[row].track_id]
            if track.was_crowded and track.count >= MIN_CHECKED and self._distance(unit, track) > self.threshold:
                jumped.append(row)
        if jumped:
            from scipy.optimize import linear_sum_assignment

            tracked = list(tracked)
            owners = [tracked[row].track_id for row in jumped]
            cost = np.array([[self._distance(units[row], self._tracks[owner]) for owner in owners] for row in jumped])
            rows, cols = linear_sum_assignment(cost)
            target = {jumped[r]: owners[c] for r, c in zip(rows, cols) if cost[r, c] <= self.threshold}
            for row in jumped:
                if row in target:
                    self.swaps += 1
                    ours = target[row]
                else:
                    self.splits += 1
                    ours = self._new()
                self._ours[self._byte[row]] = ours
                tracked[row] = replace(tracked[row], track_id=ours)
        for row, unit in units.items():
            track = self._tracks[tracked[row].track_id]
            track.total = unit.copy() if track.total is None else track.total + unit
            track.count += 1
            track.was_crowded = False
        return tracked

    @staticmethod
    def _distance(unit: np.ndarray, track: _Track) -> float:
        mean = track.total / max(float(np.linalg.norm(track.total)), 1e-12)
        return float(1.0 - unit @ mean)
