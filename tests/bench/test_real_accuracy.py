"""Smoke test of bench/real_accuracy.py on a tiny synthetic folder-layout set (never the project's real data)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpm.data.synthetic import WorldConfig, generate_world

from bench_helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("real_accuracy")


def _folder_layout(tmp_path: Path) -> tuple[Path, Path]:
    world = generate_world(tmp_path / "world", WorldConfig(
        num_train_ids=8, num_test_ids=6, num_distractors=0, num_junk=0, image_height=64, image_width=32, seed=5))
    data, test_only = tmp_path / "data", tmp_path / "test_only"
    shutil.copytree(world / "bounding_box_train", data / "train")
    for root in (data, test_only):
        shutil.copytree(world / "query", root / "query")
        shutil.copytree(world / "bounding_box_test", root / "gallery")
    return data, test_only


def test_trains_evaluates_and_reports_each_variant(bench, tmp_path, capsys):
    data, test_only = _folder_layout(tmp_path)
    out = tmp_path / "rows.json"
    assert bench.main(["--data_root", str(data), "--test_folder", str(test_only), "--net_pretrained_path", "none",
                       "--resize_h_w", "64,32", "--epochs", "1", "--workers", "0", "--out", str(tmp_path / "runs"),
                       "--variant", "orig=--recipe original --ids_per_batch 4 --ims_per_id 2",
                       "--variant", "bot=--recipe bot --ids_per_batch 4 --ims_per_id 2",
                       "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| orig |" in printed and "| bot |" in printed and "| bot on test_only |" in printed
    report = json.loads(out.read_text())
    assert "cpu" in report["machine"] and [r["variant"] for r in report["rows"]] == ["orig", "bot"]
    for row in report["rows"]:
        assert row["recipe"] == row["variant"].replace("orig", "original")
        assert 0 < row["mAP"] <= 1 and 0 <= row["rank1"] <= row["rank5"] <= row["rank10"] <= 1
        assert row["s_per_epoch"] > 0 and row["images_per_s"] > 0
        # The test-only copy holds the same query/gallery: the same numbers.
        assert row["cross_domain"][str(test_only)]["mAP"] == pytest.approx(row["mAP"])


def test_refuses_a_folder_that_is_not_a_data_set(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--data_root", str(tmp_path)])
