"""``--calibrate`` finds the known best threshold; ``--save_video`` writes a video OpenCV reads back.

Scenes of coloured blocks (the boxes are exact), embedded by the colour-bands ONNX graph: a
block's embedding is its normalised colour, so every distance, and hence the threshold that
best separates same-person from different-person tracks, is known before the run.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bpm.cli import main
from bpm.models.input_spec import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD
from bpm.stream.motfiles import read_mot
from stream_helpers import block_scene, colour_bands_model

# BGR; camera 2 sees everyone through a colour cast
PEOPLE = {1: (40, 40, 220), 2: (220, 60, 40), 3: (60, 200, 60)}
CAST = np.array([25, -10, -30])


@pytest.fixture(scope="module")
def bands(tmp_path_factory) -> Path:
    return colour_bands_model(tmp_path_factory.mktemp("model") / "bands.onnx")


def _cast(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.array(bgr) + CAST, 0, 255))


def _scenes(root: Path) -> None:
    """Everyone walks right at the same speed, 4 frames apart: blocks never overlap, every crop is one colour."""
    for camera, order, paint in (("cam1", (1, 2, 3), tuple), ("cam2", (3, 1, 2), _cast)):
        block_scene(root / camera, [(paint(PEOPLE[p]), p, 1 + 4 * k, 0, 6) for k, p in enumerate(order)], 40)


def _distance(bgr_a, bgr_b) -> float:
    """What the colour-bands graph gives for two uniform blocks: cosine distance of their normalised RGB."""
    a, b = ((np.array(c[::-1]) / 255.0 - MEAN) / STD for c in (bgr_a, bgr_b))
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_calibrate_picks_the_threshold_that_separates_same_from_different_people(tmp_path, bands, capsys):
    _scenes(tmp_path)
    tracks = [(pid, bgr) for pid, bgr in PEOPLE.items()] + [(pid, _cast(bgr)) for pid, bgr in PEOPLE.items()]
    same = [_distance(a, b) for (i, a), (j, b) in itertools.combinations(tracks, 2) if i == j]
    different = [_distance(a, b) for (i, a), (j, b) in itertools.combinations(tracks, 2) if i != j]
    assert max(same) < min(different)  # the scene is built so that one threshold range is perfect ...
    expected = (max(same) + min(different)) / 2  # ... and calibrate takes the middle of that gap
    assert main(["stream", "--source", str(tmp_path / "cam1/img1"), "--source", str(tmp_path / "cam2/img1"),
                 "--reid", str(bands), "--calibrate", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[:printed.rindex("}") + 1])
    assert result["same_pairs"] == 3 and result["different_pairs"] == 12
    assert result["balanced_accuracy"] == 1.0
    assert result["threshold"] == pytest.approx(expected, abs=1e-3)
    assert f"use --threshold {result['threshold']}" in printed
    # with that threshold the stream joins each person's tracks across the cameras, and no two people
    assert main(["stream", "--source", str(tmp_path / "cam1/img1"), "--source", str(tmp_path / "cam2/img1"),
                 "--reid", str(bands), "--detections", str(tmp_path), "--threshold", str(result["threshold"]),
                 "--min_observations", "1", "--out", str(tmp_path / "out"), "--eval", str(tmp_path), "--quiet"]) == 0
    scores = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert scores["cross_camera_pairs"] == 3 and scores["cross_camera_accuracy"] == 1.0


def test_save_video_writes_every_frame_with_identity_boxes(tmp_path, bands):
    frames = 12
    block_scene(tmp_path / "cam1", [(PEOPLE[1], 1, 1, 0, 8), (PEOPLE[3], 2, 1, 140, -6)], frames)
    assert main(["stream", "--source", str(tmp_path / "cam1/img1"), "--reid", str(bands), "--detections",
                 str(tmp_path), "--save_video", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    video = cv2.VideoCapture(str(tmp_path / "out" / "video" / "cam1.mp4"))
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    images = []
    while True:
        ok, image = video.read()
        if not ok:
            break
        images.append(image)
    assert len(images) == frames
    # the last frame: each tracked box outlined (its left edge differs from the camera's frame), the rest untouched
    tracks = read_mot(tmp_path / "out" / "tracks" / "cam1.txt")
    last = tracks[tracks[:, 0] == frames]
    untouched = cv2.imread(str(tmp_path / "cam1" / "img1" / f"{frames:06d}.png")).astype(int)
    change = np.abs(images[-1].astype(int) - untouched).max(axis=2)
    assert len(last) == 2 and len(set(last[:, 1])) == 2
    for x, y, _w, h in last[:, 2:6]:
        edge = change[int(y + h / 4):int(y + 3 * h / 4), max(0, int(x) - 1):int(x) + 2]
        assert edge.mean() > 40, edge
    assert change[100:].mean() < 8  # below every box: the frame itself (up to the codec)
