"""The whole ``bpm stream`` command on a tiny generated video with a tiny generated detector ONNX."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bpm.cli import main
from bpm.stream.motfiles import read_mot
from bpm.models.reid import build_model
from stream_helpers import cell_index, cells, constant_detector, raw_row


@pytest.fixture(scope="module")
def reid(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("reid") / "ckpt.pth"
    torch.save({"state_dicts": [build_model("mobilenetV2").eval().state_dict()]}, path)
    return path


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    raw = np.zeros((1, cells(), 7), np.float32)   # one person, centre (24, 30), 12x24 on the 64 canvas
    raw[0, cell_index(16, 1, 1)] = raw_row(24, 30, 12, 24, 16, 1, 1, 0.95, 0.9)
    return constant_detector(tmp_path_factory.mktemp("det") / "tiny_yolox.onnx", raw)


def _video(path: Path, frames: int, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 64))
    for i in range(frames):
        img = np.full((64, 64, 3), 100, np.uint8)
        img[18:42, 18:30] = (30, 30 + i % 50, 200)
        writer.write(img)
    writer.release()
    return path


def test_whole_command_writes_every_output(tmp_path, reid, detector):
    video = _video(tmp_path / "walk.avi", 12)
    out = tmp_path / "out"
    code = main(["stream", "--source", str(video), "--source", str(video), "--reid", str(reid), "--detector",
                 str(detector), "--out", str(out), "--save_video", "--gallery", str(tmp_path / "g.npz"), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["sources"]] == ["walk", "walk_2"]
    assert summary["frames"] == 24 and all(s["frames_read"] == 12 for s in summary["sources"])
    assert set(summary["stages"]) == {"decode", "detect", "embed", "associate"} and summary["fps"] > 0
    assert summary["machine"].startswith("machine: ")
    tracks = read_mot(out / "tracks" / "walk.txt")
    assert len(tracks) == 11  # ByteTrack confirms a track on its second frame
    np.testing.assert_allclose(tracks[0, 2:6], [18, 18, 12, 24], atol=0.01)
    # both cameras see the same 'person': one identity across them
    assert summary["identities"] == 1 and summary["multi_camera_identities"] == 1
    assert len(set(tracks[:, 1])) == 1 and set(read_mot(out / "tracks" / "walk_2.txt")[:, 1]) == set(tracks[:, 1])
    records = json.loads((out / "identities.json").read_text())["identities"]
    assert all((out / t["crop"]).is_file() for r in records for ts in r["cameras"].values() for t in ts)
    assert (out / "identities.csv").read_text().count("\n") == 23
    assert "<img" in (out / "identities.html").read_text()
    assert cv2.VideoCapture(str(out / "video" / "walk.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 12
    # the saved gallery is reloaded: the next run finds the same identity again
    assert main(["stream", "--source", str(video), "--reid", str(reid), "--detector", str(detector), "--out",
                 str(tmp_path / "again"), "--gallery", str(tmp_path / "g.npz"), "--quiet"]) == 0
    assert set(read_mot(tmp_path / "again" / "tracks" / "walk.txt")[:, 1]) == set(tracks[:, 1])


def test_detections_path_and_enrolled_people(tmp_path, reid):
    video = _video(tmp_path / "cam.avi", 6)
    (tmp_path / "dets").mkdir()
    (tmp_path / "dets" / "cam.txt").write_text("".join(f"{f},-1,18,18,12,24,0.9\n" for f in range(1, 7)))
    crop = np.full((24, 12, 3), 100, np.uint8)
    crop[:] = (30, 30, 200)
    (tmp_path / "people" / "ann").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "people" / "ann" / "a.png"), crop)
    assert main(["stream", "--source", str(video), "--reid", str(reid), "--detections", str(tmp_path / "dets"),
                 "--enroll", str(tmp_path / "people"), "--out", str(tmp_path / "out"), "--quiet", "--threshold", "0.5"]) == 0
    records = json.loads((tmp_path / "out" / "identities.json").read_text())["identities"]
    assert [r["name"] for r in records] == ["ann"] and records[0]["enrolled"]


def test_bad_sources_and_detectors_are_one_line_errors(tmp_path, reid, detector, capsys):
    base = ["stream", "--reid", str(reid), "--detector", str(detector), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(base + ["--source", str(tmp_path / "missing.avi")]) == 2
    assert "missing.avi: no such file" in capsys.readouterr().err
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    assert main(base + ["--source", str(tmp_path / "junk.avi")]) == 2
    assert "OpenCV cannot open it" in capsys.readouterr().err
    wrong = constant_detector(tmp_path / "wrong.onnx", np.zeros((1, 5, 7), np.float32))
    video = _video(tmp_path / "v.avi", 3)
    assert main(["stream", "--reid", str(reid), "--detector", str(wrong), "--out", str(tmp_path / "o"),
                 "--source", str(video)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected [1, 84, 5 + classes]" in err[0]


def test_a_folder_that_stops_early_ends_cleanly_with_a_warning(tmp_path, reid, detector, capsys):
    (tmp_path / "seq").mkdir()
    for i in range(1, 6):
        cv2.imwrite(str(tmp_path / "seq" / f"{i:06d}.jpg"), np.full((64, 64, 3), 90, np.uint8))
    (tmp_path / "seq" / "000004.jpg").write_bytes(b"truncated")  # the 'stream' breaks at frame 4
    assert main(["stream", "--source", str(tmp_path / "seq"), "--reid", str(reid), "--detector", str(detector),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "stream stopped after frame 3 of 5" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == 3 and (tmp_path / "out" / "tracks" / "seq.txt").is_file()


@pytest.mark.slow
def test_ctrl_c_keeps_everything_so_far_and_realtime_reports_drops(tmp_path, reid, detector):
    video = _video(tmp_path / "long.avi", 400, fps=20)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "bpm", "stream", "--source", str(video), "--reid", str(reid),
                                "--detector", str(detector), "--out", str(out), "--realtime"],
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                               # as from a terminal: a shell's background job (how CI may start us) ignores SIGINT
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in process.stderr:  # wait until frames are flowing (the progress line says how many)
        lines.append(line)
        if line.startswith("[stream]") and int(line.split(" frames ")[1].split()[0]) >= 5:
            break
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=120)[1]
    assert process.returncode == 130, "".join(lines) + rest
    assert "interrupted; outputs so far kept" in rest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["frames"] < 400
    assert len(read_mot(out / "tracks" / "long.txt")) > 0 and (out / "identities.html").is_file()
