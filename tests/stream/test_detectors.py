"""YOLOX letterbox, grid decode and NMS against hand-made raw head outputs; the detector registry."""
from __future__ import annotations

import numpy as np
import pytest

from bpm.errors import BpmError
from bpm.stream.detectors import families, load_detector
from bpm.stream.detectors.yolox import PAD_VALUE, decode, grid_cells, letterbox, nms, postprocess
from stream_helpers import SIZE, cell_index, cells, constant_detector, raw_row


def test_letterbox_keeps_aspect_and_pads_bottom_right_with_114():
    frame = np.full((40, 80, 3), 7, np.uint8)
    blob, r = letterbox(frame, 64)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32 and r == pytest.approx(0.8)
    assert (blob[0, :, :32, :64] == 7).all()            # 80x40 -> 64x32 in the top-left corner
    assert (blob[0, :, 32:, :] == PAD_VALUE).all()      # raw 0..255, BGR order untouched, no normalisation


def test_grid_is_strides_8_16_32_row_major():
    grid, strides = grid_cells(64)
    assert len(grid) == cells(64) == 84
    assert grid[:3].tolist() == [[0, 0], [1, 0], [2, 0]] and grid[8].tolist() == [0, 1]
    assert strides[63, 0] == 8 and strides[64, 0] == 16 and strides[80, 0] == 32 and grid[80].tolist() == [0, 0]


def test_decode_recovers_hand_made_boxes():
    raw = np.zeros((cells(), 7), np.float32)
    raw[cell_index(16, 2, 1)] = raw_row(40, 20, 12, 30, 16, 2, 1, 0.9, 0.8)
    raw[cell_index(32, 1, 1)] = raw_row(50, 48, 20, 24, 32, 1, 1, 0.5, 0.5)
    boxes, scores = decode(raw, SIZE)
    first, second = cell_index(16, 2, 1), cell_index(32, 1, 1)
    np.testing.assert_allclose(boxes[first], [34, 5, 46, 35], atol=1e-4)
    np.testing.assert_allclose(boxes[second], [40, 36, 60, 60], atol=1e-4)
    assert scores[first] == pytest.approx(0.72) and scores[second] == pytest.approx(0.25)


def test_nms_drops_the_weaker_overlapping_box_and_keeps_a_separate_one():
    boxes = np.array([[0, 0, 10, 20], [1, 0, 11, 20], [30, 30, 40, 50]], np.float32)
    keep = nms(boxes, np.array([0.6, 0.9, 0.5], np.float32), 0.3, 0.45)
    assert sorted(keep.tolist()) == [1, 2]


def test_postprocess_scales_back_to_the_frame_and_thresholds():
    raw = np.zeros((cells(), 7), np.float32)
    raw[cell_index(8, 3, 3)] = raw_row(28, 28, 8, 16, 8, 3, 3, 0.9, 0.9)
    raw[cell_index(8, 4, 3)] = raw_row(29, 28, 8, 16, 8, 4, 3, 0.8, 0.8)   # duplicate: suppressed
    raw[cell_index(8, 0, 0)] = raw_row(4, 4, 4, 4, 8, 0, 0, 0.2, 0.9)      # below the score threshold
    found = postprocess(raw, SIZE, 0.5, (128, 256), 0.3, 0.45)
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], [48, 40, 64, 72], atol=1e-3)


def test_onnx_detector_end_to_end_and_registry(tmp_path):
    raw = np.zeros((1, cells(), 7), np.float32)
    raw[0, cell_index(16, 1, 1)] = raw_row(24, 30, 10, 20, 16, 1, 1, 0.95, 0.9)
    detector = load_detector(constant_detector(tmp_path / "d.onnx", raw), "yolox", score_threshold=0.3)
    found = detector(np.zeros((32, 64, 3), np.uint8))   # r = 1.0
    np.testing.assert_allclose(found.boxes, [[19, 20, 29, 32]], atol=1e-3)  # clipped to the 32-pixel-high frame
    assert "yolox" in families()


def test_wrong_output_shape_is_a_one_line_error(tmp_path):
    bad = constant_detector(tmp_path / "bad.onnx", np.zeros((1, 10, 7), np.float32))
    with pytest.raises(BpmError, match=r"expected \[1, 84, 5 \+ classes\]"):
        load_detector(bad)
    with pytest.raises(BpmError, match="not a file"):
        load_detector(tmp_path / "missing.onnx")
    with pytest.raises(BpmError, match="--detector_family"):
        load_detector(bad, "ssd")
