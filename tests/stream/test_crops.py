"""Unlabelled crops from video for --distill_extra: which boxes are kept, what is written, the command."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bpm.cli import main
from bpm.errors import BpmError
from bpm.stream.crops import CropRules, harvest_crops, kept_boxes
from bpm.stream.detectors import load_detector
from bpm.stream.sources import open_source
from stream_helpers import cell_index, cells, constant_detector, raw_row


def test_kept_boxes_follow_each_rule():
    rules = CropRules(min_height=40, min_score=0.5, min_aspect=1.5, edge=2)
    boxes = np.array([
        [10, 10, 30, 60],    # kept: 50 tall, 20 wide, inside
        [10, 10, 30, 60],    # score 0.4: dropped
        [10, 10, 30, 45],    # 35 tall: dropped
        [10, 10, 50, 60],    # 50 tall, 40 wide (aspect 1.25): dropped
        [1, 10, 21, 60],     # touches the left edge: dropped
        [70, 30, 90, 99],    # touches the bottom edge (frame 100 high): dropped
        [60.4, 20.6, 79.6, 90.2],  # kept, rounded to whole pixels
    ], np.float32)
    scores = np.array([0.9, 0.4, 0.9, 0.9, 0.9, 0.9, 0.5], np.float32)
    kept = kept_boxes(boxes, scores, (100, 120), rules)
    assert kept.tolist() == [[10, 10, 30, 60], [60, 21, 80, 90]]
    assert kept_boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), (100, 120), rules).shape == (0, 4)


@pytest.mark.parametrize("flag, rules", [("--every", {"every": 0}), ("--score", {"min_score": 1.5}),
                                         ("--min_height", {"min_height": 0}), ("--max_frames", {"max_frames": -1})])
def test_bad_rules_are_one_line_errors(flag, rules):
    with pytest.raises(BpmError, match=f"^{flag}: expected"):
        CropRules(**rules)


def _scene(tmp_path, frames: int = 7):
    """64x64 noise frames and a detector that finds one 16x40 person at (24, 12)-(40, 52) in each."""
    folder = tmp_path / "cam"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, frames + 1):
        cv2.imwrite(str(folder / f"{i:06d}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    raw = np.zeros((1, cells(), 7), np.float32)
    raw[0, cell_index(16, 2, 2)] = raw_row(32, 32, 16, 40, 16, 2, 2, 0.95, 0.9)
    return folder, constant_detector(tmp_path / "detector.onnx", raw)


def test_harvest_writes_the_kept_box_of_every_nth_frame(tmp_path):
    folder, detector_file = _scene(tmp_path)
    detector = load_detector(detector_file, score_threshold=0.3)
    written = harvest_crops(open_source(str(folder)), detector, tmp_path / "crops", CropRules(every=3, min_height=32))
    files = sorted((tmp_path / "crops" / "cam").glob("*.jpg"))
    assert written == 3 and [f.name for f in files] == ["cam_000001_0.jpg", "cam_000004_0.jpg", "cam_000007_0.jpg"]
    assert cv2.imread(str(files[0])).shape == (40, 16, 3)
    taller = harvest_crops(open_source(str(folder)), detector, tmp_path / "none", CropRules(min_height=41))
    assert taller == 0


def test_crops_command(tmp_path, capsys):
    folder, detector_file = _scene(tmp_path, frames=5)
    out = tmp_path / "extra"
    assert main(["crops", "--source", str(folder), "--detector", str(detector_file), "--out", str(out),
                 "--every", "2", "--min_height", "32", "--max_frames", "3"]) == 0
    assert len(list((out / "cam").glob("*.jpg"))) == 2  # frames 1 and 3
    assert f"--distill_extra {out}" in capsys.readouterr().out
    assert main(["crops", "--source", str(folder), "--detector", str(detector_file), "--out", str(out),
                 "--every", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --every: expected a frame step >= 1"
