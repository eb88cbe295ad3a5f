"""The stream loop: per camera decode -> detect -> track -> embed -> associate, round-robin over cameras.

One thread runs the networks, cameras in turn: on a small CPU they already use every core (ONNX
Runtime's intra-op threads), so more threads would only compete. Only decoding runs beside them,
in a reader thread per camera (:mod:`bpm.stream.reader`), since it overlaps with inference for
free. In each round every camera whose frame is due is decoded, detected and tracked, then the
crops of all of them go to the re-ID network in one call (one batch instead of one per camera),
then each camera's tracks are checked and associated, in camera order. Each stage is timed per
frame; the live progress line and ``summary.json`` report them. With ``realtime`` every camera is
played at its own frame rate (a file behaves like a live camera): a camera whose next frame is not
due yet waits, one that fell behind drops the frames it missed (the decoded ones, then the rest by
``grab`` without decoding) and the drops are counted (gaps in the frame numbers).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from bpm.files import write_text
from bpm.stream.appearance import DEFAULT_TRACK_THRESHOLD, AppearanceLinker
from bpm.stream.association import Associator
from bpm.stream.detectors import Detections
from bpm.stream.gallery import Gallery, quality
from bpm.stream.html import render_identities
from bpm.stream.outputs import identity_records, write_crops, write_identities, write_summary, write_tracks
from bpm.stream.reader import DirectReader, FrameReader, open_reader
from bpm.stream.sources import Frame, Source
from bpm.stream.tracking import CameraTracker, TrackedBox
from bpm.stream.video import AnnotatedVideo

STAGES = ("decode", "detect", "embed", "associate")
Embedder = Callable[[list[np.ndarray]], np.ndarray]  # RGB crops -> (N, D)


@dataclass
class StreamSettings:
    threshold: float = 0.3
    min_observations: int = 3      # embeddings a track gathers before it is matched to the gallery
    embed_every: int = 3           # after that, embed a track's crop every n-th frame
    lost_seconds: float = 1.0      # a track unseen this long is lost (ByteTrack's buffer, the associator's end)
    realtime: bool = False
    save_video: bool = False
    appearance: bool = True
    track_appearance: bool = True  # check per-camera tracks by appearance too (bpm.stream.appearance)
    track_threshold: float = DEFAULT_TRACK_THRESHOLD
    max_frames: int = 0            # per camera; 0 = all
    progress_every: float = 1.0    # seconds between progress lines
    crop_max_height: int = 128     # crops kept for the HTML page are at most this tall
    read_ahead: int = 2            # frames a reader thread decodes ahead per camera (0: decode in the loop)


@dataclass
class Camera:
    source: Source
    tracker: CameraTracker
    detections: Callable[[int], Detections] | None = None  # det.txt reader instead of a detector
    video: AnnotatedVideo | None = None
    linker: AppearanceLinker | None = None  # set by StreamRun when tracks are checked by appearance
    reader: FrameReader | DirectReader | None = None
    next_index: int = 1            # the frame due next (after a drop, the first one after the gap)
    last_index: int = 0            # the frame processed last
    read: int = 0
    dropped: int = 0
    ended: str = ""


@dataclass
class StageTimes:
    samples: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})

    def add(self, stage: str, seconds: float) -> None:
        self.samples[stage].append(seconds * 1000.0)

    def last_mean(self, stage: str, count: int = 50) -> float:
        values = self.samples[stage][-count:]
        return float(np.mean(values)) if values else 0.0

    def report(self) -> dict[str, dict[str, float]]:
        """Per stage: mean/median/p95 milliseconds per frame and the fps the stage alone would allow."""
        out = {}
        for stage, values in self.samples.items():
            if values:
                mean = float(np.mean(values))
                out[stage] = {"frames": len(values), "mean_ms": round(mean, 3), "median_ms": round(float(np.median(values)), 3),
                              "p95_ms": round(float(np.percentile(values, 95)), 3),
                              "fps": round(1000.0 / mean, 1) if mean > 0 else None}
        return out


@dataclass
class _Step:
    """One camera's frame between tracking and association (the crops of a round are embedded together)."""
    frame: Frame
    tracked: list[TrackedBox]
    crops: list[np.ndarray] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)      # the tracked box each crop is of
    embedded: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0                                # tracking and crop picking (counted as associate)


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    return frame[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]


def _thumbnail(crop_bgr: np.ndarray, max_height: int) -> np.ndarray:
    import cv2

    if crop_bgr.shape[0] <= max_height:
        return crop_bgr.copy()
    scale = max_height / crop_bgr.shape[0]
    return cv2.resize(crop_bgr, (max(1, int(crop_bgr.shape[1] * scale)), max_height), interpolation=cv2.INTER_AREA)


class StreamRun:
    """One ``bpm stream`` run over its cameras; :meth:`run` processes, :meth:`write` saves (also after Ctrl-C)."""

    def __init__(self, cameras: Sequence[Camera], out: Path, detector: Callable[[np.ndarray], Detections] | None,
                 embedder: Embedder | None, gallery: Gallery, settings: StreamSettings,
                 info: dict[str, Any] | None = None, progress: TextIO | None = sys.stderr) -> None:
        self.cameras, self.out, self.detector, self.embedder = list(cameras), out, detector, embedder
        self.gallery, self.settings, self.info, self.progress = gallery, settings, dict(info or {}), progress
        self.associator = Associator(gallery, settings.min_observations, settings.appearance and embedder is not None)
        if self.associator.appearance and settings.track_appearance:
            for camera in self.cameras:
                camera.linker = AppearanceLinker(settings.track_threshold)
        self.times = StageTimes()
        self.processed = 0
        self.status = "running"
        self.started = time.perf_counter()
        self.finished = self.started
        self._last_progress = 0.0

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        """Process every camera to its end; Ctrl-C ends it early (the caller then calls :meth:`write`)."""
        self.started = time.perf_counter()
        for camera in self.cameras:
            camera.reader = open_reader(camera.source, self.settings.read_ahead)
        try:
            while any(not c.ended for c in self.cameras):
                due = [camera for camera in self.cameras if not camera.ended and self._due(camera)]
                begun = [(camera, step) for camera in due if (step := self._begin(camera)) is not None]
                if begun:
                    self._embed([step for _, step in begun])
                    for camera, step in begun:
                        self._end(camera, step)
                elif not due:
                    time.sleep(self._wait_time())
                self._report_progress()
            self.status = "finished"
        except KeyboardInterrupt:
            self.status = "interrupted"
            for camera in self.cameras:
                camera.ended = camera.ended or "interrupted"
        finally:
            self.finished = time.perf_counter()
            for camera in self.cameras:
                camera.reader.close()
            self.associator.finish()
            if self.progress is not None:
                self._report_progress(force=True)
                self.progress.write("\n")

    def _due(self, camera: Camera) -> bool:
        """Without ``realtime`` always; with it, whether the camera's next frame exists yet (dropping missed ones)."""
        if not self.settings.realtime:
            return True
        elapsed = time.perf_counter() - self.started
        current = int(elapsed * camera.source.fps) + 1  # the frame the camera is showing now
        if camera.next_index > current:
            return False
        if camera.next_index < current:  # the frames it missed are dropped (counted when the next one arrives)
            camera.reader.skip_to(current)
            camera.next_index = current
        return True

    def _wait_time(self) -> float:
        elapsed = time.perf_counter() - self.started
        waits = [(c.next_index - 1) / c.source.fps - elapsed for c in self.cameras if not c.ended]
        return float(min(max(min(waits, default=0.0), 0.0005), 0.05))

    def _begin(self, camera: Camera) -> _Step | None:
        """Decode, detect and track the camera's next frame and pick the crops to embed (None: it ended)."""
        settings = self.settings
        t0 = time.perf_counter()
        frame = camera.reader.next()
        t1 = time.perf_counter()
        if frame is None or (settings.max_frames and camera.read >= settings.max_frames):
            total = camera.source.frame_count
            camera.ended = ("end of stream" if total is None or camera.next_index > total or settings.max_frames
                            else f"stream stopped after frame {camera.next_index - 1} of {total}")
            return None
        self.times.add("decode", t1 - t0)
        camera.read += 1
        camera.dropped += frame.index - camera.last_index - 1
        camera.next_index = camera.last_index = frame.index
        camera.next_index += 1
        detections = camera.detections(frame.index) if camera.detections is not None else self.detector(frame.image)
        t2 = time.perf_counter()
        self.times.add("detect", t2 - t1)
        tracked = camera.tracker.update(detections)
        linker = camera.linker
        if linker is not None:
            tracked = linker.assign(tracked)
        # which boxes to embed: tracks still gathering their first embeddings, then every embed_every-th
        # frame, and those the appearance check needs (just out of a crowd)
        step = _Step(frame, tracked)
        if self.associator.appearance:
            for row, item in enumerate(tracked):
                state = self.associator.tracks.get((camera.source.name, item.track_id))
                gathering = state is None or state.observations < settings.min_observations
                if gathering or (frame.index - state.first_frame) % settings.embed_every == 0 \
                        or (linker is not None and linker.wants_embedding(row, item)):
                    crop = _crop(frame.image, item.box)
                    if crop.shape[0] >= 4 and crop.shape[1] >= 2:
                        step.crops.append(np.ascontiguousarray(crop[:, :, ::-1]))
                        step.rows.append(row)
        step.seconds = time.perf_counter() - t2
        return step

    def _embed(self, steps: list[_Step]) -> None:
        """One re-ID call for the crops of every camera's frame of this round; each frame is charged its share."""
        crops = [crop for step in steps for crop in step.crops]
        t0 = time.perf_counter()
        embeddings = self.embedder(crops) if crops else np.zeros((0, 0), np.float32)
        share = (time.perf_counter() - t0) / len(steps)
        at = 0
        for step in steps:
            step.embedded = dict(zip(step.rows, embeddings[at:at + len(step.rows)]))
            at += len(step.rows)
            self.times.add("embed", share)

    def _end(self, camera: Camera, step: _Step) -> None:
        """The appearance check, then every tracked box to the associator (and the annotated video)."""
        settings, frame, tracked = self.settings, step.frame, step.tracked
        t4 = time.perf_counter()
        if camera.linker is not None:
            tracked = camera.linker.check(tracked, step.embedded)
        drawn = []
        for row, item in enumerate(tracked):
            weight = quality(item.score, item.box)
            state = self.associator.tracks.get((camera.source.name, item.track_id))
            keep_crop = state is None or weight > state.best_quality
            crop = _thumbnail(_crop(frame.image, item.box), settings.crop_max_height) if keep_crop else None
            state = self.associator.observe(camera.source.name, item.track_id, frame.index, frame.time, item.box,
                                            item.score, step.embedded.get(row), weight, crop)
            drawn.append((state.identity.id if state.identity is not None else 0, item.box))
        lost_frames = max(1, int(round(settings.lost_seconds * camera.source.fps)))
        self.associator.end_lost(camera.source.name, frame.index, lost_frames)
        self.times.add("associate", time.perf_counter() - t4 + step.seconds)
        if camera.video is not None:
            camera.video.write(frame.image, drawn)
        self.processed += 1

    # ---------------------------------------------------------------- reporting
    def fps(self) -> float:
        end = time.perf_counter() if self.status == "running" else self.finished
        return self.processed / max(end - self.started, 1e-9)

    def _report_progress(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_progress < self.settings.progress_every:
            return
        self._last_progress = now
        stages = " ".join(f"{s} {self.times.last_mean(s):.1f}ms" for s in STAGES)
        dropped = sum(c.dropped for c in self.cameras)
        line = (f"[stream] {now - self.started:6.1f}s frames {self.processed} | {self.fps():5.1f} fps | {stages} | "
                f"identities {len(self.gallery.identities)}" + (f" | dropped {dropped}" if self.settings.realtime else ""))
        interactive = getattr(self.progress, "isatty", lambda: False)()
        self.progress.write(("\r" + line) if interactive else line + "\n")
        self.progress.flush()

    def summary(self) -> dict[str, Any]:
        wall = max(self.finished - self.started, 1e-9)
        identities = [i for i in self.gallery.identities.values()
                      if any(t.identity is i for t in self.associator.tracks.values())]
        return {
            **self.info,
            "status": self.status,
            "sources": [{"name": c.source.name, "source": c.source.spec, "fps": c.source.fps,
                         "frames_read": c.read, "frames_dropped": c.dropped, "frame_count": c.source.frame_count,
                         "ended": c.ended or "running"} for c in self.cameras],
            "frames": self.processed,
            "wall_seconds": round(wall, 3),
            "fps": round(self.processed / wall, 2),
            "per_camera_fps": round(self.processed / wall / max(1, len(self.cameras)), 2),
            "stages": self.times.report(),
            "latency_ms_per_frame": round(sum(s["mean_ms"] for s in self.times.report().values()), 3),
            "tracks": len(self.associator.tracks),
            "identities": len(identities),
            "multi_camera_identities": sum(len(i.cameras) > 1 for i in identities),
            "threshold": self.settings.threshold,
            "appearance": self.associator.appearance,
            "track_appearance": {"threshold": self.settings.track_threshold,
                                 "swaps_undone": sum(c.linker.swaps for c in self.cameras if c.linker),
                                 "splits": sum(c.linker.splits for c in self.cameras if c.linker)}
            if any(c.linker for c in self.cameras) else None,
        }

    def write(self) -> dict[str, Any]:
        """Every output of the run so far (after the loop ended, normally or not)."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        for camera in self.cameras:
            if camera.video is not None:
                camera.video.close()
        tracks = list(self.associator.tracks.values())
        write_tracks(out, [c.source.name for c in self.cameras], tracks)
        crops = write_crops(out, tracks)
        records = identity_records(tracks, crops)
        write_identities(out, records)
        summary = self.summary()
        write_text(out / "identities.html", render_identities(
            "bpm stream: identities", records,
            [f"{summary['identities']} identities over {len(self.cameras)} camera(s), {summary['frames']} frames; "
             f"one crop per track (its best-quality one)."]), "identities page")
        write_summary(out, summary)
        return summary
