"""The original's four command lines, replayed unchanged (plus -d '()', one epoch and a tiny dataset in the
original's converted images/ + partitions.pkl layout)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bpm.data.datasets import build_dataset
from bpm.data.convert import write_converted

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def converted(tiny_world, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("converted") / "market1501"
    write_converted(build_dataset("market1501", str(tiny_world)), root)
    assert (root / "images").is_dir() and (root / "partitions.pkl").is_file()
    return root


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    return done


def test_original_train_test_visualize_chain(converted, tmp_path):
    exp_dir = tmp_path / "exp"
    # trainMe.sh: MobileNet-V2, O2, combined-style trainval recipe, validation every 5 epochs, erase/crop off.
    run("script/experiment/train.py", "-d", "()", "--dataset", "market1501", "--data_root", str(converted),
        "--trainset_part", "trainval", "--net", "mobilenetV2", "--opt-level", "O2", "--total_epochs", "1",
        "--epochs_per_val", "5", "--erase", "false", "--crop_prob", "0", "--exp_dir", str(exp_dir),
        "--net_pretrained_path", "none", *SMALL)
    ckpt = torch.load(exp_dir / "ckpt.pth", weights_only=True)
    assert {"state_dicts", "ep", "scores"} <= set(ckpt) and ckpt["ep"] == 1
    assert list(exp_dir.glob("stdout_*.txt")) and list(exp_dir.glob("stderr_*.txt"))
    assert (exp_dir / "tensorboard").is_dir() and (exp_dir / "results.json").is_file()
    assert "Single Query:" in next(exp_dir.glob("stdout_*.txt")).read_text()

    # testMe.sh: --only_test with FP16 (O3) inference of the saved weights, re-ranking on.
    test_dir = tmp_path / "test"
    done = run("script/experiment/train.py", "--only_test", "true", "-d", "()", "--dataset", "market1501",
               "--data_root", str(converted), "--net", "mobilenetV2", "--model_weight_file", str(exp_dir / "ckpt.pth"),
               "--opt-level", "O3", "--exp_dir", str(test_dir), *SMALL)
    for line in ("Single Query:", "Multi Query:", "Re-ranked Single Query:", "Re-ranked Multi Query:"):
        assert line in done.stdout
    results = json.loads((test_dir / "results.json").read_text())
    assert results["opt_level"] == "O3" and 0 <= results["mAP"] <= 1

    # vis_res.sh: 16 queries, top-10 rank lists.
    vis_dir = tmp_path / "vis"
    run("script/experiment/visualize_rank_list.py", "-d", "()", "--dataset", "market1501", "--data_root",
        str(converted), "--num_queries", "4", "--rank_list_size", "5", "--net", "mobilenetV2", "--opt-level", "O0",
        "--model_weight_file", str(exp_dir / "ckpt.pth"), "--exp_dir", str(vis_dir), "--resize_h_w", "(64, 32)")
    assert len(list((vis_dir / "rank_lists").glob("*.jpg"))) == 4

    # extractModels.sh's step with the original's extract_weights.py flags: FP16 weights file and ONNX graph.
    export_dir = tmp_path / "export"
    run("script/experiment/extract_weights.py", "--check_point_file", str(exp_dir / "ckpt.pth"),
        "--model_file", str(export_dir / "model_weight.pt"), "--onnx_file", str(export_dir / "model.onnx"),
        "--net", "mobilenetV2", "--resize_h_w", "(64, 32)", "--opt-level", "O2")
    assert (export_dir / "model_weight.pt").is_file() and (export_dir / "model.onnx").is_file()

    # infer_images_example.py: features of a folder into a .mat file (input size from the checkpoint).
    from scipy.io import loadmat

    images = sorted((converted / "images").iterdir())
    run("script/experiment/infer_images_example.py", "-d", "()", "--ckpt_file", str(exp_dir / "ckpt.pth"),
        "--saved_feature_mat_file", str(tmp_path / "feats"), "--image_dir", str(converted / "images"),
        "--net", "mobilenetV2")
    mat = loadmat(tmp_path / "feats.mat")
    assert mat["features"].shape[0] == len(images) and mat["names"].shape[0] == len(images)
