"""identities.html in a real headless browser: every crop loads, no script or console error, a screenshot."""
from __future__ import annotations

import json

import pytest

from bpm.stream.gallery import Gallery
from bpm.stream.motfiles import DetectionFile, find_camera_file
from bpm.stream.pipeline import Camera, StreamRun, StreamSettings
from bpm.stream.sources import open_sources
from bpm.stream.tracking import CameraTracker
from browser_helpers import assert_renders_cleanly, render_page, require_browser
from stream_helpers import block_scene, colour_embedder

RED, BLUE, GREEN = (40, 40, 220), (220, 60, 40), (60, 200, 60)  # BGR


@pytest.mark.slow
def test_identities_page_renders_in_chromium(tmp_path):
    require_browser()  # before the run: nothing to do without a browser
    cameras = ["hall", "door"]  # red walks from the hall to the door: one identity with crops from both
    block_scene(tmp_path / cameras[0], [(RED, 1, 1, 0, 8), (BLUE, 2, 1, 140, -6)], 30)
    block_scene(tmp_path / cameras[1], [(GREEN, 3, 1, 140, -6), (RED, 1, 36, 0, 8)], 55)
    sources = open_sources([str(tmp_path / name / "img1") for name in cameras])
    run = StreamRun([Camera(s, CameraTracker(s.fps), DetectionFile(find_camera_file(tmp_path, s.name, "det")))
                     for s in sources], tmp_path / "out", None, colour_embedder, Gallery(0.05),
                    StreamSettings(threshold=0.05), progress=None)
    run.run()
    summary = run.write()
    assert summary["multi_camera_identities"] == 1
    records = json.loads((tmp_path / "out" / "identities.json").read_text())["identities"]
    crops = [t["crop"] for r in records for tracks in r["cameras"].values() for t in tracks if t["crop"]]
    assert len(crops) == summary["tracks"] >= 4

    rendered = render_page(tmp_path / "out" / "identities.html", tmp_path / "identities.png")
    assert_renders_cleanly(rendered, expected_images=len(crops))
    assert all(image["naturalHeight"] == 48 for image in rendered.images)  # the blocks' full height: the real crops
