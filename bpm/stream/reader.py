"""Decoding overlapped with inference: one reader thread per camera, a few frames ahead, bounded.

OpenCV releases the GIL while it decodes and ONNX Runtime while it runs a graph, so a camera's
next frame can be decoded while the networks work on the current one. The queue is short
(``ahead`` frames): memory stays bounded and, with ``--realtime``, a dropped frame costs at most
the few already decoded. All calls on the source (read, skip, close) happen in the reader thread,
since a ``cv2.VideoCapture`` is not to be shared between threads.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator

from bpm.stream.sources import Frame, Source

_END = object()


class FrameReader:
    """``source``'s frames decoded ahead in a thread; :meth:`next` and :meth:`skip_to` from the main thread."""

    def __init__(self, source: Source, ahead: int = 2) -> None:
        self.source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._first = 1      # frames numbered below this are dropped (set by skip_to)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"bpm-reader-{source.name}", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        frames: Iterator[Frame] = self.source.frames()
        last = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    first = self._first
                if first > last + 1:
                    last += self.source.skip(first - last - 1)
                frame = next(frames, None)
                if frame is None:
                    break
                last = frame.index
                if frame.index >= self._first and not self._put(frame):
                    break
        except BaseException as exc:  # handed to the main thread, which raises it there
            self._put(exc)
        finally:
            self._put(_END)

    def next(self) -> Frame | None:
        """The next frame not dropped (its ``index`` shows the gap), or None at the stream's end."""
        while True:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # later calls see the end too
                return None
            if isinstance(item, BaseException):
                raise item
            if item.index >= self._first:
                return item

    def skip_to(self, index: int) -> None:
        """Drop every frame numbered below ``index``: decoded ones are discarded, the rest not decoded (``grab``)."""
        with self._lock:
            self._first = max(self._first, index)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class DirectReader:
    """The same interface without a thread: frames decoded in the loop (``--read_ahead 0``)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._frames = source.frames()
        self._last = 0

    def next(self) -> Frame | None:
        frame = next(self._frames, None)
        if frame is not None:
            self._last = frame.index
        return frame

    def skip_to(self, index: int) -> None:
        if index > self._last + 1:
            self._last += self.source.skip(index - self._last - 1)

    def close(self) -> None:
        pass


def open_reader(source: Source, ahead: int) -> FrameReader | DirectReader:
    """A thread decoding up to ``ahead`` frames ahead, or (``ahead`` 0) decoding in the caller's loop."""
    return FrameReader(source, ahead) if ahead > 0 else DirectReader(source)
