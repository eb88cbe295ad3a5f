"""Smoke test of bench/int8_variants.py: accuracy next to speed on a tiny folder set and checkpoint."""
from __future__ import annotations

import shutil

import pytest
import torch

from bpm.data.synthetic import WorldConfig, generate_world
from bpm.models.reid import build_model

from bench_helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("int8_variants")


def test_every_variant_gets_speed_and_accuracy(bench, tmp_path, capsys):
    world = generate_world(tmp_path / "world", WorldConfig(
        num_train_ids=6, num_test_ids=4, num_distractors=0, num_junk=0, image_height=64, image_width=32, seed=2))
    data = tmp_path / "data"
    shutil.copytree(world / "bounding_box_train", data / "train")
    shutil.copytree(world / "query", data / "query")
    shutil.copytree(world / "bounding_box_test", data / "gallery")
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(build_model("mobilenetV2").state_dict(), weights)
    chosen = ["per-channel u8/s8 QOperator, MinMax", "equalised + MSE ranges", "equalised + QAT 1 ep. (learned ranges)"]
    assert bench.main(["--weights", str(weights), "--data_root", str(data), "--size", "64x32", "--calib_count", "8",
                       "--repeats", "1", "--threads", "1", "--qat_epochs", "1",
                       *[a for name in chosen for a in ("--only", name)]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("machine:")
    assert any(line.startswith("quantisation-aware fine-tuning: 1 epoch(s)") for line in lines)
    rows = {line.split(" | ")[0].strip("| "): line.strip("|").split("|") for line in lines if line.startswith("| ")}
    assert set(rows) == {"variant", "ORT FP32", *chosen}
    fp32 = [cell.strip() for cell in rows["ORT FP32"]]
    assert fp32[2] == "1.00" and float(fp32[3]) == pytest.approx(1.0) and 0 <= float(fp32[5]) <= 100
    for name in chosen:
        cells = [cell.strip() for cell in rows[name]]
        assert float(cells[1]) > 0 and -1 <= float(cells[3]) <= 1.0001 and 0 <= float(cells[5]) <= 100


def test_weights_need_a_data_set(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--weights", str(tmp_path / "w.pth")])
