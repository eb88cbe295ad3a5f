"""Saved features are evaluated again without the model, giving the same numbers."""
import json

import numpy as np

from bpm.cli import main
from bpm.data.records import ImageRecord
from bpm.evaluation import compute_distances, evaluate
from bpm.evaluation.features_file import save_features


def saved_features(path, seed: int, num_query: int, num_gallery: int, num_ids: int, gallery_cams: int):
    """Random features of a small query/gallery world, written as test set ``demo``; returns what was saved."""
    rng = np.random.default_rng(seed)
    query = [ImageRecord(f"/q/{i:04d}_c1s1_0001_00.jpg", i % num_ids + 1, 1) for i in range(num_query)]
    gallery = [ImageRecord(f"/g/{i:04d}_c2s1_0001_00.jpg", i % num_ids + 1, 2 + i % gallery_cams)
               for i in range(num_gallery)]
    q_feat = rng.normal(size=(num_query, 8)).astype(np.float32)
    g_feat = rng.normal(size=(num_gallery, 8)).astype(np.float32)
    save_features(path, q_feat, query, "demo/query")
    save_features(path, g_feat, gallery, "demo/gallery")
    return q_feat, g_feat, query, gallery


def test_features_file_round_trip(tmp_path, capsys):
    path = tmp_path / "feats.h5"
    q_feat, g_feat, query, gallery = saved_features(path, seed=0, num_query=10, num_gallery=30, num_ids=5,
                                                    gallery_cams=2)

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


def test_ap_definition_and_protocol_switches_reach_the_metrics(tmp_path, capsys):
    """``--ap market_matlab`` and ``--protocol cuhk03`` score exactly as the metrics' own definitions."""
    path = tmp_path / "feats.h5"
    q_feat, g_feat, query, gallery = saved_features(path, seed=3, num_query=12, num_gallery=48, num_ids=6,
                                                    gallery_cams=3)
    ids = ([r.pid for r in query], [r.pid for r in gallery], [r.camid for r in query], [r.camid for r in gallery])
    dist = compute_distances(q_feat, g_feat)
    seen = {}
    for ap, protocol in (("sklearn", "market1501"), ("market_matlab", "market1501"), ("sklearn", "cuhk03")):
        out_dir = tmp_path / f"{ap}_{protocol}"
        assert main(["evaluate", "--features_file", str(path), "--rerank", "false", "--ap", ap,
                     "--protocol", protocol, "--exp_dir", str(out_dir)]) == 0
        results = json.loads((out_dir / "results.json").read_text())
        expected = evaluate(dist, *ids, ap=ap, protocol=protocol)
        assert results["mAP"] == expected["mAP"]
        assert (results["ap"], results["protocol"]) == (ap, protocol)
        seen[(ap, protocol)] = results["mAP"]
    capsys.readouterr()
    assert len(set(seen.values())) == 3  # each definition really scores differently on this ranking


def test_unknown_ap_definition_is_one_line(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["evaluate", "--features_file", str(tmp_path / "f.h5"), "--ap", "voc"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --ap: invalid choice") and "\n" not in err


def test_evaluate_respects_the_folder_lock_and_records_its_source(tmp_path, capsys):
    """Reliability III finding 3: a folder a run holds is refused in one line, writing nothing; the
    results name the features file by its path and the weights/net it came from."""
    import os
    import socket

    import h5py

    from bpm.engine.runfolder import LOCK_NAME

    path = tmp_path / "feats.h5"
    saved_features(path, seed=1, num_query=6, num_gallery=12, num_ids=3, gallery_cams=2)
    with h5py.File(path, "a") as handle:
        handle.attrs["weights"], handle.attrs["net"] = "/models/b/ckpt.pth", "resnet50"
    held = tmp_path / "held"
    held.mkdir()
    (held / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                              "started": "now", "command": "bpm train"}))
    assert main(["evaluate", "--features_file", str(path), "--rerank", "false", "--exp_dir", str(held)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by process {os.getppid()}" in err[0]
    assert sorted(p.name for p in held.iterdir()) == [LOCK_NAME]

    out_dir = tmp_path / "free"
    assert main(["evaluate", "--features_file", str(path), "--rerank", "false", "--exp_dir", str(out_dir)]) == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert results["features_file"] == str(path.resolve())
    assert (results["weights"], results["net"]) == ("/models/b/ckpt.pth", "resnet50")
    assert not (out_dir / LOCK_NAME).exists()
