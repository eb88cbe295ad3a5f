"""Cameras: what OpenCV opens (video files, RTSP/HTTP URLs, camera indices) and image-sequence folders.

Each source is one camera with a name (used for output files and in ``--detections`` folders), a
frame rate (the stream's own, or ``DEFAULT_FPS`` when it does not say) and frames numbered from 1
as in MOTChallenge. A stream that stops mid-way simply ends; the pipeline reports how far it got.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from bpm.errors import BpmError

DEFAULT_FPS = 10.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass
class Frame:
    index: int          # 1-based, in the source's own numbering (dropped frames leave gaps)
    time: float         # seconds since the source's start, from its frame rate
    image: np.ndarray   # HxWx3 BGR uint8


def camera_name(spec: str) -> str:
    """A file-name-safe camera name: the file stem, the folder (its parent for MOT's ``img1``), ``camN``, or the host."""
    if spec.isdigit():
        return f"cam{spec}"
    if _URL.match(spec):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.split("://", 1)[1]).strip("_")[:60] or "stream"
    path = Path(spec)
    name = path.parent.name if path.name == "img1" else (path.name if path.is_dir() else path.stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "camera"


class Source:
    """One camera. ``frames()`` yields :class:`Frame`; ``skip(n)`` drops n frames without decoding them."""

    def __init__(self, spec: str, name: str) -> None:
        self.spec, self.name = spec, name
        self.fps = DEFAULT_FPS
        self.frame_count: int | None = None

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def skip(self, count: int) -> int:
        """Advance ``count`` frames without returning them (``--realtime`` drops); frames actually skipped."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class VideoSource(Source):
    """A video file, URL or camera index read by ``cv2.VideoCapture``."""

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec, name)
        if not spec.isdigit() and not _URL.match(spec) and not Path(spec).exists():
            raise BpmError(f"--source {spec}: no such file or folder (expected a video, an image folder, a URL or a camera index)")
        self.capture = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not self.capture.isOpened():
            raise BpmError(f"--source {spec}: OpenCV cannot open it as a video, stream or camera")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else DEFAULT_FPS
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self._next = 1

    def frames(self) -> Iterator[Frame]:
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                return
            index = self._next
            self._next += 1
            yield Frame(index, (index - 1) / self.fps, image)

    def skip(self, count: int) -> int:
        done = 0
        while done < count and self.capture.grab():
            done += 1
        self._next += done
        return done

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(Source):
    """A folder of numbered images (MOTChallenge's ``img1``), read in name order."""

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec, name)
        self.files = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise BpmError(f"--source {spec}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.frame_count = len(self.files)
        self._position = 0

    def frames(self) -> Iterator[Frame]:
        while self._position < len(self.files):
            path = self.files[self._position]
            self._position += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:  # an unreadable image ends the stream as a broken video would
                return
            yield Frame(self._position, (self._position - 1) / self.fps, image)

    def skip(self, count: int) -> int:
        done = min(count, len(self.files) - self._position)
        self._position += done
        return done


def open_source(spec: str, name: str | None = None) -> Source:
    """The camera ``spec`` names; a missing or unopenable one is a one-line :class:`BpmError`."""
    name = name or camera_name(spec)
    if Path(spec).is_dir():
        return ImageFolderSource(spec, name)
    return VideoSource(spec, name)


def open_sources(specs: list[str]) -> list[Source]:
    """All cameras, with unique names (a repeated name gets ``_2``, ``_3`` ...)."""
    sources: list[Source] = []
    seen: dict[str, int] = {}
    try:
        for spec in specs:
            base = camera_name(spec)
            seen[base] = seen.get(base, 0) + 1
            sources.append(open_source(spec, base if seen[base] == 1 else f"{base}_{seen[base]}"))
    except BpmError:
        for source in sources:
            source.close()
        raise
    return sources
