"""The rank-list page shows each query's true matches (same identity, other cameras) with their ranks,
as a second, smaller row; the rank-list JPEG keeps the original's geometry; inputs are checked first."""
from __future__ import annotations

import re
import time

import numpy as np
from PIL import Image

from bpm.cli import main
from bpm.data.records import ImageRecord
from bpm.evaluation.features_file import save_features
from bpm.vis.rank_list import MATCH_TILE_H, MATCH_TILE_W, true_matches


def test_true_matches_rank_among_valid_entries():
    g_pids = np.array([1, 2, 1, -1, 1, 3])
    g_cams = np.array([2, 1, 1, 2, 3, 1])
    dist = np.array([0.5, 0.1, 0.0, 0.2, 0.9, 0.3])
    # Order 2(same cam: skipped), 1, 3(junk: skipped), 5, 0, 4 -> valid ranks: 1->1, 5->2, 0->3, 4->4.
    assert true_matches(dist, 1, 1, g_pids, g_cams) == [(0, 3), (4, 4)]
    assert true_matches(dist, 9, 1, g_pids, g_cams) == []


def _features(tmp_path):
    """Query 1 (camera 1) with many gallery images of its identity from camera 2, ranked last."""
    gallery = [(2, 1), (2, 2), (3, 1), (3, 2), (0, 1)] * 3 + [(1, 2)] * 4 + [(1, 1)]
    records = []
    for i, (pid, cam) in enumerate(gallery):
        path = tmp_path / "img" / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 32), (40 + pid * 50, cam * 80, 100)).save(path)
        records.append(ImageRecord(str(path), pid, cam))
    g_feat = np.stack([np.full(4, float(i)) for i in range(len(records))]).astype(np.float32)  # distance grows with i
    features = tmp_path / "f.h5"
    save_features(features, g_feat[:1] * 0, [ImageRecord(records[-1].path, 1, 1)], "toy/query")
    save_features(features, g_feat, records, "toy/gallery")
    return features


def test_index_shows_true_matches_with_their_ranks(tmp_path):
    assert main(["visualize", "--features_file", str(_features(tmp_path)), "--exp_dir", str(tmp_path / "exp"),
                 "--num_queries", "1", "--rank_list_size", "10", "--log_to_file", "false"]) == 0
    out = tmp_path / "exp/rank_lists"
    page = (out / "index.html").read_text()
    # 15 other-identity entries come first; the 4 camera-2 matches are ranks 16..19; the camera-1 one is skipped.
    assert re.search(r'data-ranks="16, 17, 18, 19"', page) and "first match at rank 16" in page
    [picture] = out.glob("*.jpg")
    assert Image.open(picture).size == (784, 128)  # the original's geometry, unchanged
    [strip] = (out / "true_matches").glob("*.jpg")
    assert f'src="true_matches/{strip.name}"' in page
    pixels = np.asarray(Image.open(strip).convert("RGB"), dtype=np.int16)
    assert pixels.shape[0] > MATCH_TILE_H and pixels.shape[1] == 4 * MATCH_TILE_W + 3 * 8
    assert (np.abs(pixels[MATCH_TILE_H // 2, 0] - (255, 0, 0)) < 60).all()  # below the top 10: red border


def test_visualize_checks_the_weights_before_loading_data(tmp_path, capsys):
    start = time.perf_counter()
    assert main(["visualize", "-d", "()", "--dataset", "market1501", "--data_root", str(tmp_path),
                 "--model_weight_file", str(tmp_path / "missing.pth"), "--log_to_file", "false",
                 "--exp_dir", str(tmp_path / "exp")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.pth'}: weights file not found"
    assert time.perf_counter() - start < 2.0
