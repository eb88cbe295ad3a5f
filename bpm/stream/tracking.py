"""Per-camera tracking: ``trackers``' ByteTrack (Kalman motion + IoU, two-stage by score) over detections.

ByteTrack links boxes frame to frame by motion; appearance enters one level up, where each
track's embeddings are matched against the identity gallery (:mod:`bpm.stream.gallery`), which
re-links a person who left and came back or whose track broke, and links cameras.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bpm.stream.detectors import Detections


@dataclass(frozen=True)
class TrackedBox:
    track_id: int
    box: np.ndarray   # x1, y1, x2, y2
    score: float
    detection: int    # index into the frame's detections


class CameraTracker:
    """One camera's ByteTrack; ``update(detections)`` gives the confirmed tracks' boxes of this frame."""

    def __init__(self, fps: float, lost_seconds: float = 1.0, activation_score: float = 0.4,
                 high_score: float = 0.5, min_frames: int = 1) -> None:
        import supervision as sv
        from trackers import ByteTrackTracker

        self._sv = sv
        # ByteTrack counts its lost buffer in 30-fps frames and scales by frame_rate itself
        self.tracker = ByteTrackTracker(lost_track_buffer=max(1, int(round(lost_seconds * 30))), frame_rate=fps,
                                        track_activation_threshold=activation_score,
                                        minimum_consecutive_frames=min_frames, high_conf_det_threshold=high_score)

    def update(self, detections: Detections) -> list[TrackedBox]:
        sv = self._sv
        if len(detections):
            batch = sv.Detections(xyxy=detections.boxes.astype(np.float32), confidence=detections.scores.astype(np.float32),
                                  data={"index": np.arange(len(detections))})
        else:
            batch = sv.Detections.empty()
            batch.data["index"] = np.zeros((0,), int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = self.tracker.update(batch)
        if len(result) == 0:
            return []
        out = []
        for index, track_id in zip(result.data["index"], result.tracker_id):
            if track_id >= 0:
                out.append(TrackedBox(int(track_id), detections.boxes[index], float(detections.scores[index]), int(index)))
        return out
