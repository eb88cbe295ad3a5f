"""YOLOX (Megvii) person detector from an ONNX export of the raw head.

Conventions of the official export (``decode_in_inference=False``), which this module follows:

* input ``[1, 3, S, S]`` float32 **BGR 0..255, not normalised**; the frame is resized by
  ``r = min(S / h, S / w)`` (bilinear) into the **top-left** corner of an ``S x S`` canvas of 114;
* output ``[1, N, 5 + C]`` with ``N = sum((S / s)^2 for s in (8, 16, 32))`` cells, strides in that
  order, each grid row-major; per cell ``[x, y, w, h, objectness, C class scores]`` where
  centre = (xy + cell) * stride, size = exp(wh) * stride (canvas pixels, divide by r for the frame),
  objectness and class scores already sigmoid-activated; score = objectness * class score;
* per-class NMS (YOLOX: IoU 0.45); only the person class (0 in COCO) is kept here.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bpm.errors import BpmError, one_line
from bpm.models.onnx_graph import session_options
from bpm.stream.detectors import Detections, register

STRIDES = (8, 16, 32)
PAD_VALUE = 114
PERSON_CLASS = 0


def letterbox(frame_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``[1, 3, size, size]`` float32 network input and the scale ``r`` (canvas = frame * r)."""
    h, w = frame_bgr.shape[:2]
    r = min(size / h, size / w)
    nh, nw = int(h * r), int(w * r)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), r


def grid_cells(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output row: the cell's ``(x, y)`` index and its stride, strides 8/16/32 in order, row-major."""
    cells, strides = [], []
    for stride in STRIDES:
        n = size // stride
        ys, xs = np.mgrid[0:n, 0:n]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((n * n, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode(raw: np.ndarray, size: int, class_index: int = PERSON_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2 in canvas pixels) and scores of one class from the raw head ``[N, 5 + C]``."""
    cells, strides = grid_cells(size)
    centre = (raw[:, 0:2] + cells) * strides
    wh = np.exp(raw[:, 2:4]) * strides
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    return boxes.astype(np.float32), (raw[:, 4] * raw[:, 5 + class_index]).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS (OpenCV's), best score first."""
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold, iou_threshold)
    return np.asarray(keep, np.int64).reshape(-1)


def postprocess(raw: np.ndarray, size: int, r: float, frame_hw: tuple[int, int], score_threshold: float,
                iou_threshold: float) -> Detections:
    """Raw head output of one image -> person detections in frame pixels."""
    boxes, scores = decode(raw, size)
    candidates = scores >= score_threshold
    boxes, scores = boxes[candidates] / r, scores[candidates]
    h, w = frame_hw
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = nms(boxes, scores, score_threshold, iou_threshold)
    return Detections(boxes[keep], scores[keep])


class YoloxDetector:
    """A YOLOX ONNX file under ONNX Runtime; ``detector(frame_bgr)`` gives person :class:`Detections`."""

    def __init__(self, path: str | Path, score_threshold: float = 0.3, nms_threshold: float = 0.45,
                 threads: int = 0, spin: bool = False) -> None:
        import onnxruntime as ort

        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        options = session_options(threads, spin)
        if spin:  # spin between the graph's many small operators, but stop when a frame is done (decoding needs the cores)
            options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT has its own exception types
            raise BpmError(f"--detector: ONNX Runtime cannot load {path} ({one_line(exc)})") from exc
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        shape = inp.shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]) or shape[2] != shape[3] or shape[1] != 3:
            raise BpmError(f"--detector: {path} input {inp.name} has shape {shape}; expected [1, 3, S, S] (YOLOX)")
        self.input_name, self.size = inp.name, int(shape[2])
        if self.size % 32:
            raise BpmError(f"--detector: {path} input size {self.size} is not a multiple of 32 (YOLOX strides 8/16/32)")
        self.cells = sum((self.size // s) ** 2 for s in STRIDES)
        out_shape = out.shape
        if len(out_shape) != 3 or out_shape[1] not in (self.cells, None) and not isinstance(out_shape[1], str) \
                or isinstance(out_shape[2], int) and out_shape[2] < 6:
            raise BpmError(f"--detector: {path} output {out.name} has shape {out_shape}; expected "
                           f"[1, {self.cells}, 5 + classes] (YOLOX raw head for a {self.size}x{self.size} input)")

    def __call__(self, frame_bgr: np.ndarray) -> Detections:
        blob, r = letterbox(frame_bgr, self.size)
        raw = self.session.run(None, {self.input_name: blob})[0]
        if raw.ndim != 3 or raw.shape[1] != self.cells or raw.shape[2] < 6:
            raise BpmError(f"--detector: output has shape {list(raw.shape)}; expected "
                           f"[1, {self.cells}, 5 + classes] (YOLOX raw head)")
        return postprocess(raw[0], self.size, r, frame_bgr.shape[:2], self.score_threshold, self.nms_threshold)


@register("yolox")
def load(path: str | Path, score_threshold: float = 0.3, nms_threshold: float = 0.45, threads: int = 0,
         spin: bool = False) -> YoloxDetector:
    return YoloxDetector(path, score_threshold, nms_threshold, threads, spin)
