"""Tracks to identities: a track's embeddings are averaged and matched against the gallery.

A track is matched once it holds ``min_observations`` embeddings (a single crop is often
occluded or cut at the frame edge) or when it ends sooner. Identities held by another live
track of the same camera are excluded (one person is not in two places of one frame); the same
identity in two cameras at once is allowed (overlapping views). After the decision every new
embedding of the track also refines its identity's mean.

With ``appearance=False`` (the baseline ``--no_appearance``) every track is its own identity:
what motion-only tracking gives.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bpm.stream.gallery import Gallery, Identity, unit


@dataclass
class TrackState:
    camera: str
    track_id: int
    first_frame: int
    last_frame: int
    total: np.ndarray | None = None  # weighted sum of unit embeddings
    weight: float = 0.0
    observations: int = 0
    identity: Identity | None = None
    distance: float = float("nan")  # to the identity it joined (nan: founded a new one)
    best_crop: np.ndarray | None = None
    best_quality: float = -1.0
    rows: list[tuple] = field(default_factory=list)  # (frame, time, x1, y1, x2, y2, score)


class Associator:
    """Keeps every track of every camera and gives each an identity from the gallery."""

    def __init__(self, gallery: Gallery, min_observations: int = 3, appearance: bool = True) -> None:
        self.gallery = gallery
        self.min_observations = min_observations
        self.appearance = appearance
        self.tracks: dict[tuple[str, int], TrackState] = {}
        self.live: dict[str, set[tuple[str, int]]] = {}

    def observe(self, camera: str, track_id: int, frame: int, time: float, box: np.ndarray, score: float,
                embedding: np.ndarray | None, weight: float, crop: np.ndarray | None) -> TrackState:
        """Record one tracked box (and its embedding, if it was embedded this frame)."""
        key = (camera, track_id)
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = TrackState(camera, track_id, frame, frame)
            self.live.setdefault(camera, set()).add(key)
        track.last_frame = frame
        track.rows.append((frame, time, *(float(v) for v in box), score))
        if crop is not None and weight > track.best_quality:
            track.best_crop, track.best_quality = crop, weight
        if embedding is not None:
            weighted = weight * unit(embedding.astype(np.float32))
            track.total = weighted if track.total is None else track.total + weighted
            track.weight += weight
            track.observations += 1
            if track.identity is not None:
                track.identity.add(weighted, weight)
        if track.identity is None and (not self.appearance or track.observations >= self.min_observations):
            self._decide(track)
        return track

    def end_lost(self, camera: str, frame: int, lost_frames: int) -> None:
        """Tracks of ``camera`` unseen for more than ``lost_frames``: decided now, no longer live."""
        for key in list(self.live.get(camera, ())):
            track = self.tracks[key]
            if frame - track.last_frame > lost_frames:
                self.live[camera].discard(key)
                if track.identity is None:
                    self._decide(track)

    def finish(self) -> None:
        for camera in self.live:
            for key in self.live[camera]:
                if self.tracks[key].identity is None:
                    self._decide(self.tracks[key])
            self.live[camera] = set()

    def _decide(self, track: TrackState) -> None:
        identity = None
        if self.appearance and track.total is not None:
            busy = {self.tracks[k].identity.id for k in self.live.get(track.camera, ())
                    if k != (track.camera, track.track_id) and self.tracks[k].identity is not None}
            identity, track.distance = self.gallery.match(track.total / track.weight, exclude=busy)
        if identity is None:
            identity = self.gallery.new_identity()
            track.distance = float("nan")
        track.identity = identity
        identity.cameras.add(track.camera)
        if track.total is not None:
            identity.add(track.total, track.weight)
