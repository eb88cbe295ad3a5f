"""Tiny files for the stream tests: a YOLOX-shaped ONNX detector, coloured-block scenes, MOT files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bpm.stream.detectors.yolox import STRIDES

SIZE = 64  # detector input: 8x8 + 4x4 + 2x2 = 84 cells


def cells(size: int = SIZE) -> int:
    return sum((size // s) ** 2 for s in STRIDES)


def raw_row(cx: float, cy: float, w: float, h: float, stride: int, cell_x: int, cell_y: int, obj: float,
            person: float, classes: int = 2) -> np.ndarray:
    """The raw-head row that decodes to a box centred (cx, cy) of size (w, h) in canvas pixels."""
    row = np.zeros(5 + classes, np.float32)
    row[0], row[1] = cx / stride - cell_x, cy / stride - cell_y
    row[2], row[3] = np.log(w / stride), np.log(h / stride)
    row[4], row[5] = obj, person
    return row


def cell_index(stride: int, cell_x: int, cell_y: int, size: int = SIZE) -> int:
    index = 0
    for s in STRIDES:
        n = size // s
        if s == stride:
            return index + cell_y * n + cell_x
        index += n * n
    raise ValueError(stride)


def constant_detector(path: Path, raw: np.ndarray, size: int = SIZE) -> Path:
    """An ONNX 'detector' that outputs ``raw`` ([1, N, 5 + C]) for any image (plus 0 x the image, so it reads it)."""
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(raw.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw", "nothing"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "constant_yolox", [image], [output],
                              [numpy_helper.from_array(raw.astype(np.float32), "raw"),
                               numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def block_scene(folder: Path, walkers: list[tuple[tuple[int, int, int], int, int, float, float]], frames: int,
                size: tuple[int, int] = (120, 160)) -> list[tuple[int, int, float, float, float, float]]:
    """Frames of coloured blocks on grey: walker (colour, gt id, first frame, x at start, x speed per frame).

    Writes ``folder/img1/*.png`` and ``folder/det/det.txt``; returns the ground-truth rows
    (frame, id, x, y, w, h).
    """
    h, w = size
    (folder / "img1").mkdir(parents=True, exist_ok=True)
    rows = []
    for frame in range(1, frames + 1):
        img = np.full((h, w, 3), 128, np.uint8)
        for colour, gt_id, start, x0, speed in walkers:
            if frame < start:
                continue
            x = x0 + speed * (frame - start)
            if not 0 <= x <= w - 16:
                continue
            y = 30 + (gt_id % 3) * 4
            img[y:y + 48, int(x):int(x) + 16] = colour
            rows.append((frame, gt_id, float(int(x)), float(y), 16.0, 48.0))
        cv2.imwrite(str(folder / "img1" / f"{frame:06d}.png"), img)
    (folder / "det").mkdir(exist_ok=True)
    (folder / "det" / "det.txt").write_text("".join(f"{f},-1,{x},{y},{bw},{bh},0.9\n" for f, _i, x, y, bw, bh in rows))
    (folder / "gt").mkdir(exist_ok=True)
    (folder / "gt" / "gt.txt").write_text("".join(f"{f},{i},{x},{y},{bw},{bh},1,1,1\n" for f, i, x, y, bw, bh in rows))
    return rows


def colour_embedder(crops: list[np.ndarray]) -> np.ndarray:
    """An 'appearance model' that sees the block's colour: mean RGB of the crop's centre, centred on grey."""
    out = []
    for crop in crops:
        h, w = crop.shape[:2]
        centre = crop[h // 4: max(h // 4 + 1, 3 * h // 4), w // 4: max(w // 4 + 1, 3 * w // 4)].reshape(-1, 3)
        out.append(centre.mean(axis=0) - 128.0 + 1e-3)
    return np.asarray(out, np.float32)


def colour_bands_model(path: Path) -> Path:
    """A re-ID 'model' meaningful without training, as a bpm ONNX file: the mean normalised colour of eight
    horizontal bands of the crop (hair, shirt, trousers, shoes ...), 24 numbers. It tells the synthetic
    world's people apart by their clothes well enough to follow them across cameras."""
    import torch

    from bpm.export.onnx import OnnxSpec, export_onnx

    class ColourBands(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(images, (8, 1)).flatten(1)

    return export_onnx(ColourBands(), path, OnnxSpec(net="colour_bands", resize_h_w=(64, 32)))
