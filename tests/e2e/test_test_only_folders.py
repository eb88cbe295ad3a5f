"""Evaluating on data without training images (a new camera network, a customer's data, a second
benchmark): every test-only command line works on a folder with only query/ + gallery/ and on a
Market folder whose bounding_box_train/ is empty or missing; only training refuses it, in one line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bpm.cli import main
from bpm.data.synthetic import WorldConfig, generate_world
from bpm.models.reid import build_model

ROOT = Path(__file__).resolve().parents[2]
WORLD = WorldConfig(num_train_ids=2, num_test_ids=4, num_cameras=3, max_cameras_per_id=3, num_distractors=2,
                    num_junk=1, image_height=64, image_width=32, seed=5)
FAST = ["-d", "()", "--resize_h_w", "(64, 32)", "--workers", "0", "--log_to_file", "false"]
LAYOUTS = ["folder", "market_empty_train", "market_no_train"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Test-only copies of a tiny world's query and gallery images, and an untrained weights file."""
    base = tmp_path_factory.mktemp("test_only")
    world = generate_world(base / "world", WORLD)
    folders = {layout: base / layout for layout in LAYOUTS}
    shutil.copytree(world / "query", folders["folder"] / "query")
    shutil.copytree(world / "bounding_box_test", folders["folder"] / "gallery")
    for layout in LAYOUTS[1:]:
        for split in ("query", "bounding_box_test", "gt_bbox"):
            shutil.copytree(world / split, folders[layout] / split)
    (folders["market_empty_train"] / "bounding_box_train").mkdir()
    weights = base / "mobilenetV2.pth"
    torch.manual_seed(0)
    torch.save(build_model("mobilenetV2").state_dict(), weights)
    return {**folders, "weights": weights}


def dataset_switches(data: dict[str, Path], layout: str) -> list[str]:
    return ["--dataset", "folder" if layout == "folder" else "market1501", "--data_root", str(data[layout])]


def model_switches(data: dict[str, Path]) -> list[str]:
    return ["--net", "mobilenetV2", "--model_weight_file", str(data["weights"])]


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bpm_test_then_evaluate(data, layout, tmp_path, capsys):
    exp_dir = tmp_path / "exp"
    features = tmp_path / "features.h5"
    assert main(["test", *FAST, *dataset_switches(data, layout), *model_switches(data), "--rerank", "false",
                 "--exp_dir", str(exp_dir), "--save_features", str(features)]) == 0
    out = capsys.readouterr().out
    assert "Single Query:" in out and "[mAP:" in out
    if layout != "folder":
        assert "Multi Query:" in out  # gt_bbox/ of the Market copy
    results = json.loads((exp_dir / "results.json").read_text())
    assert 0 <= results["mAP"] <= 1

    assert main(["evaluate", "--features_file", str(features), "--rerank", "false"]) == 0
    assert "Single Query:" in capsys.readouterr().out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bpm_visualize(data, layout, tmp_path, capsys):
    exp_dir = tmp_path / "vis"
    assert main(["visualize", *FAST, *dataset_switches(data, layout), *model_switches(data),
                 "--num_queries", "3", "--rank_list_size", "4", "--exp_dir", str(exp_dir)]) == 0
    assert "Rank lists of" in capsys.readouterr().out
    assert len(list((exp_dir / "rank_lists").glob("*.jpg"))) == 3


def test_bpm_extract_query_folder(data, tmp_path, capsys):
    out = tmp_path / "query.h5"
    assert main(["extract", "--weights", str(data["weights"]), "--images", str(data["folder"] / "query"),
                 "--out", str(out), "--resize_h_w", "(64, 32)"]) == 0
    assert "images ->" in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bpm_train_refuses_in_one_line(data, layout, tmp_path, capsys):
    exp_dir = tmp_path / "exp"
    assert main(["train", *FAST, *dataset_switches(data, layout), "--net", "mobilenetV2",
                 "--exp_dir", str(exp_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert str(data[layout]) in err and "training needs training images" in err
    assert not exp_dir.exists()


@pytest.mark.parametrize("layout", ["folder", "market_no_train"])
def test_bpm_data_check_says_test_only(data, layout, capsys):
    assert main(["data", "check", *dataset_switches(data, layout)]) == 0
    assert "test-only" in capsys.readouterr().out


@pytest.mark.slow
def test_original_scripts_on_test_only_folders(data, tmp_path):
    """The original's ``train.py --only_test true`` and ``visualize_rank_list.py``, as real processes
    (thin wrappers of ``bpm test`` / ``bpm visualize``, which the tests above run in-process)."""
    done = run_script(sys.executable, "script/experiment/train.py", "--only_test", "true", *FAST,
                      *dataset_switches(data, "folder"), *model_switches(data), "--rerank", "false",
                      "--exp_dir", str(tmp_path / "test"))
    assert done.returncode == 0, done.stderr[-1500:]
    assert "Single Query:" in done.stdout

    done = run_script(sys.executable, "script/experiment/visualize_rank_list.py", *FAST,
                      *dataset_switches(data, "market_empty_train"), *model_switches(data), "--num_queries", "2",
                      "--rank_list_size", "3", "--exp_dir", str(tmp_path / "vis"))
    assert done.returncode == 0, done.stderr[-1500:]
    assert len(list((tmp_path / "vis" / "rank_lists").glob("*.jpg"))) == 2



@pytest.mark.slow
def test_testme_sh_on_a_test_only_folder(data, tmp_path):
    """``testMe.sh`` (FP16/BF16 O3 inference, re-ranking on) with the folder and net switches appended."""
    done = run_script(str(ROOT / "testMe.sh"), str(data["weights"]), *FAST, *dataset_switches(data, "folder"),
                      "--net", "mobilenetV2", "--exp_dir", str(tmp_path / "testme"), timeout=600)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "Single Query:" in done.stdout and "Re-ranked Single Query:" in done.stdout
