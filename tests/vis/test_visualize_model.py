"""The weights-file route of ``bpm visualize`` and the two wrappers (the original's script, vis_res.sh)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bpm.cli import main
from bpm.data.datasets import build_dataset
from bpm.evaluation.features import extract_features
from bpm.evaluation.features_file import save_features
from bpm.models.reid import build_model
from bpm.precision import PrecisionPolicy

ROOT = Path(__file__).resolve().parents[2]


def _market(parent: Path) -> Path:
    """A tiny Market-1501 folder whose images differ in colour per identity and camera."""
    root = parent / "Market-1501-v15.09.15"
    rng = np.random.default_rng(0)
    k = 0
    splits = {"bounding_box_train": [(p, c) for p in (1, 2, 3, 4) for c in (1, 2)],
              "query": [(5, 1), (6, 2), (7, 1)],
              "bounding_box_test": [(5, 2), (5, 3), (5, 1), (6, 1), (6, 3), (7, 2), (0, 1), (0, 2), (-1, 3)]}
    for folder, spec in splits.items():
        (root / folder).mkdir(parents=True)
        for pid, cam in spec:
            k += 1
            ident = "-1" if pid == -1 else f"{pid:04d}"
            pixels = rng.integers(0, 256, size=(32, 16, 3), dtype=np.uint8)
            pixels[:16] = (pid * 37 % 256, cam * 60, 90)
            Image.fromarray(pixels).save(root / folder / f"{ident}_c{cam}s1_{k:06d}_00.jpg", quality=95)
    return root


@pytest.mark.slow
def test_weights_route_matches_features_route(tmp_path):
    """Extraction inside the visualiser = extract_features under the same policy, with normalisation."""
    root = _market(tmp_path)
    torch.manual_seed(0)
    model = build_model("mobilenetV2")
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    common = ["--log_to_file", "false", "--num_queries", "3", "--rank_list_size", "5", "--normalize_feature", "true"]
    assert main(["visualize", "-d", "()", "--dataset", "market1501", "--data_root", str(root), "--resize_h_w",
                 "(64, 32)", "--model_weight_file", str(weights), "--workers", "0", "--exp_dir",
                 str(tmp_path / "model"), *common]) == 0

    test_set = build_dataset("market1501", root).test_sets[0]
    policy = PrecisionPolicy.create("O0", "cpu")
    model.eval()
    feats = {side: extract_features(model, getattr(test_set, side), policy, (64, 32), workers=0)
             for side in ("query", "gallery")}
    features = tmp_path / "f.h5"
    for side, values in feats.items():
        save_features(features, values, getattr(test_set, side), f"market1501/{side}")
    assert main(["visualize", "--features_file", str(features), "--exp_dir", str(tmp_path / "file"), *common]) == 0

    by_model = sorted((tmp_path / "model/rank_lists").glob("*.jpg"))
    assert len(by_model) == 3
    for picture in by_model:
        a = np.asarray(Image.open(picture), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "file/rank_lists" / picture.name), dtype=np.int16)
        assert a.shape == (128, 6 * 64 + 5 * 8, 3) and np.abs(a - b).max() <= 2


def test_default_weights_are_the_experiment_checkpoint(tmp_path, capsys):
    assert main(["visualize", "-d", "()", "--data_root", str(tmp_path), "--exp_dir", str(tmp_path / "exp"),
                 "--log_to_file", "false"]) == 2
    assert f"{tmp_path / 'exp' / 'ckpt.pth'}: weights file not found" in capsys.readouterr().err


def _features(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    from bpm.data.records import ImageRecord

    records = []
    for i, (pid, cam) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)] * 2):
        path = tmp_path / "img" / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 32), (pid * 60, cam * 80, 100)).save(path)
        records.append(ImageRecord(str(path), pid, cam))
    features = tmp_path / "f.h5"
    save_features(features, rng.normal(size=(6, 4)).astype(np.float32), records[:6], "cuhk03/query")
    save_features(features, rng.normal(size=(12, 4)).astype(np.float32), records, "cuhk03/gallery")
    return features


def test_original_script_takes_the_original_flags(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "script/experiment/visualize_rank_list.py"), "-d", "()", "--dataset", "cuhk03",
         "--num_queries", "4", "--rank_list_size", "10", "--resize_h_w", "(256, 128)", "--last_conv_stride", "1",
         "--normalize_feature", "false", "--log_to_file", "true", "--exp_dir", str(tmp_path / "exp"),
         "--opt-level", "O0", "--net", "mobilenetV2", "--features_file", str(_features(tmp_path))],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "exp/rank_lists").glob("*.jpg"))) == 4
    assert list((tmp_path / "exp").glob("stdout_*.txt"))


def test_vis_res_sh(tmp_path):
    usage = subprocess.run([str(ROOT / "vis_res.sh"), "-h"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: vis_res.sh")
    env = {**os.environ, "FEATURES": str(_features(tmp_path)), "EXP_DIR": str(tmp_path / "exp"), "DEVICES": "()",
           "PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "vis_res.sh"), "--num_queries", "5", "--log_to_file", "false"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pictures = sorted((tmp_path / "exp/rank_lists").glob("*.jpg"))
    assert len(pictures) == 5 and all(Image.open(p).size == (784, 128) for p in pictures)


@pytest.mark.slow
def test_training_writes_plots_and_its_checkpoint_visualizes(tmp_path):
    root = _market(tmp_path)
    exp = tmp_path / "exp"
    assert main(["train", "-d", "()", "--dataset", "market1501", "--data_root", str(root), "--exp_dir", str(exp),
                 "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--total_epochs", "1",
                 "--workers", "0", "--steps_per_log", "1", "--log_to_file", "false", "--rerank", "false",
                 "--net_pretrained_path", "none"]) == 0
    for name in ("training_curves.png", "cmc_curve.png"):
        assert (exp / name).stat().st_size > 10_000 and Image.open(exp / name).format == "PNG"
    assert main(["visualize", "-d", "()", "--dataset", "market1501", "--data_root", str(root), "--exp_dir", str(exp),
                 "--resize_h_w", "(64, 32)", "--workers", "0", "--num_queries", "2", "--rank_list_size", "4",
                 "--log_to_file", "false"]) == 0
    assert len(list((exp / "rank_lists").glob("*.jpg"))) == 2 and (exp / "rank_lists/index.html").is_file()
