"""Saved features are evaluated again without the model, giving the same numbers."""
import json

import numpy as np

from bpm.cli import main
from bpm.data.records import ImageRecord
from bpm.evaluation import compute_distances, evaluate
from bpm.evaluation.features_file import save_features


def test_features_file_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    query = [ImageRecord(f"/q/{i:04d}_c1s1_0001_00.jpg", i % 5 + 1, 1) for i in range(10)]
    gallery = [ImageRecord(f"/g/{i:04d}_c2s1_0001_00.jpg", i % 5 + 1, 2 + i % 2) for i in range(30)]
    q_feat = rng.normal(size=(10, 8)).astype(np.float32)
    g_feat = rng.normal(size=(30, 8)).astype(np.float32)
    path = tmp_path / "feats.h5"
    save_features(path, q_feat, query, "demo/query")
    save_features(path, g_feat, gallery, "demo/gallery")

    assert main(["evaluate", "--features_file", str(path), "--rerank", "true", "--exp_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Single Query:" in out and "Re-ranked Single Query:" in out
    expected = evaluate(compute_distances(q_feat, g_feat), [r.pid for r in query], [r.pid for r in gallery],
                        [r.camid for r in query], [r.camid for r in gallery])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mAP"] == expected["mAP"]
    assert f"[mAP: {expected['mAP']:5.2%}]" in out


def test_missing_features_file_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--features_file", str(tmp_path / "none.h5")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --features_file")
