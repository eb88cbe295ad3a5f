"""The INT8 thresholds on a trained network: cosine >= 0.98 and at most 1 mAP point lost.

Training even briefly (triplet loss, a few dozen steps) tames the random network's chaotic response
to rounding, which is what the mechanics tests on an untrained network cannot show.
"""
from __future__ import annotations

import json

import pytest

from bpm.cli import main
from bpm.export.pipeline import ExportOptions, run_export

pytestmark = pytest.mark.slow


def test_int8_export_of_a_trained_model_meets_the_thresholds(tmp_path, world):
    exp_dir = tmp_path / "exp"
    assert main(["train", "-d", "()", "--dataset", "market1501", "--data_root", str(world), "--resize_h_w", "(64, 32)",
                 "--ids_per_batch", "4", "--ims_per_id", "4", "--base_lr", "1e-3", "--total_epochs", "12",
                 "--erase", "false", "--crop_prob", "0", "--set_seed", "true", "--workers", "0", "--rerank", "false",
                 "--log_to_file", "false", "--exp_dir", str(exp_dir), "--steps_per_log", "0"]) == 0
    out = tmp_path / "export"
    run_export(ExportOptions(weights=str(exp_dir / "ckpt.pth"), out_dir=str(out), resize_h_w=(64, 32),
                             formats=("onnx", "onnx_int8"), dataset="market1501", data_root=str(world),
                             calib_count=64, threads=2), log=lambda line: None)
    report = json.loads((out / "export_report.json").read_text())
    int8 = next(row for row in report["formats"] if row["format"] == "onnx_int8")
    assert report["passed"] and int8["cosine_mean"] >= 0.98
    assert int8["mAP_drop_points"] <= 1.0 and report["reference"]["mAP"] > 0
