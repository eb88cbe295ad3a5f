"""The generated multi-camera sequences, and the whole ``bpm stream --detections --eval`` loop on them.

The people are the synthetic world's (:mod:`bpm.data.synthetic`'s public renderer) walking through
two cameras with their own optics; the appearance model is a fixed colour-bands ONNX graph, so no
training is needed and the answers are known: ground-truth ids are global across cameras.
"""
from __future__ import annotations

import json
from pathlib import Path

import motmetrics as mm
import numpy as np
import pytest

from bpm.cli import main
from bpm.stream.motfiles import read_mot
from bpm.stream.synthetic_sequences import SequenceConfig, generate_sequences
from stream_helpers import colour_bands_model

CONFIG = SequenceConfig(num_cameras=2, num_people=4, frames=60, width=240, height=180, seed=0)


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seq")
    generate_sequences(root / "seq", CONFIG)
    colour_bands_model(root / "bands.onnx")
    return root


def test_sequences_have_global_ids_and_detections_equal_to_gt(sequences):
    seen = {}
    for camera in ("cam1", "cam2"):
        folder = sequences / "seq" / camera
        assert len(list((folder / "img1").glob("*.jpg"))) == CONFIG.frames
        gt, det = read_mot(folder / "gt" / "gt.txt"), read_mot(folder / "det" / "det.txt")
        np.testing.assert_array_equal(gt[:, [0, 2, 3, 4, 5]], det[:, [0, 2, 3, 4, 5]])
        assert (gt[:, 4:6] > 0).all() and (gt[:, 2] + gt[:, 4] <= CONFIG.width + 0.1).all()
        assert "frameRate=10" in (folder / "seqinfo.ini").read_text()
        seen[camera] = set(gt[:, 1].astype(int))
    assert seen["cam1"] | seen["cam2"] == set(range(1, CONFIG.num_people + 1))
    assert seen["cam1"] & seen["cam2"]  # someone walks through both cameras: a cross-camera pair to get right


def _stream(root: Path, out: str, *extra: str) -> int:
    return main(["stream", "--source", str(root / "seq/cam1/img1"), "--source", str(root / "seq/cam2/img1"),
                 "--reid", str(root / "bands.onnx"), "--detections", str(root / "seq"), "--out", str(root / out),
                 "--quiet", *extra])


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")  # inside motmetrics' loadtxt, pandas 3
def test_calibrated_appearance_follows_people_across_cameras_and_motion_alone_does_not(sequences, capsys):
    assert _stream(sequences, "unused", "--calibrate", str(sequences / "seq")) == 0
    printed = capsys.readouterr().out
    calibration = json.loads(printed[:printed.rindex("}") + 1])
    assert calibration["balanced_accuracy"] > 0.8 and calibration["same_pairs"] >= 1
    threshold = str(calibration["threshold"])
    assert _stream(sequences, "appearance", "--threshold", threshold, "--eval", str(sequences / "seq")) == 0
    assert _stream(sequences, "plain", "--no_appearance", "--eval", str(sequences / "seq")) == 0
    scores = {name: json.loads((sequences / name / "eval.json").read_text()) for name in ("appearance", "plain")}
    # the tracks are MOTChallenge files motmetrics itself reads back, box for box
    for camera in ("cam1", "cam2"):
        ours = read_mot(sequences / "appearance" / "tracks" / f"{camera}.txt")
        theirs = mm.io.loadtxt(str(sequences / "appearance" / "tracks" / f"{camera}.txt"), fmt="mot15-2D")
        frame_id = np.array(theirs.index.to_list(), float)
        boxes = theirs[["X", "Y", "Width", "Height"]].to_numpy() + [1, 1, 0, 0]  # it reads 1-based corners 0-based
        assert len(theirs) == len(ours) > 0
        np.testing.assert_allclose(_sorted(np.hstack([frame_id, boxes])), _sorted(ours[:, :6]), atol=1e-3)
        assert scores["appearance"]["cameras"][camera]["precision"] == pytest.approx(1.0)  # boxes are the gt's
    good, plain = scores["appearance"], scores["plain"]
    assert good["cross_camera_pairs"] == plain["cross_camera_pairs"] >= 1
    assert good["cross_camera_accuracy"] > plain["cross_camera_accuracy"]
    assert good["cross_camera_idf1"] > plain["cross_camera_idf1"]
    assert good["idf1"] >= plain["idf1"] - 1e-9  # appearance does not cost the per-camera tracking anything
