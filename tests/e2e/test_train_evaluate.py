"""End to end through the real command line: the loss falls and mAP rises on a small synthetic world."""
import json
import subprocess
import sys

import pytest

from bpm.data.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.slow

SMALL_WORLD = WorldConfig(num_train_ids=48, num_test_ids=24, num_cameras=4, max_cameras_per_id=4, num_distractors=20, num_junk=5,
                          image_height=64, image_width=32, seed=3)


def test_training_lowers_loss_and_raises_map(tmp_path):
    world = generate_world(tmp_path / "world", SMALL_WORLD)
    exp_dir = tmp_path / "exp"
    cmd = [sys.executable, "-m", "bpm", "train", "-d", "()", "--dataset", "market1501", "--data_root", str(world),
           "--resize_h_w", "(64, 32)", "--ids_per_batch", "8", "--ims_per_id", "4", "--optimizer", "sgd",
           "--base_lr", "0.03", "--total_epochs", "30", "--exp_decay_at_epoch", "16", "--erase", "false", "--crop_prob", "0", "--set_seed", "true", "--workers", "1",
           "--eval_untrained", "true", "--rerank", "false", "--exp_dir", str(exp_dir), "--steps_per_log", "0",
           "--net_pretrained_path", "none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Single Query:" in done.stdout and "[mAP:" in done.stdout

    steps = [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s["kind"] == "step"]
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < 0.7 * first, (first, last)

    results = json.loads((exp_dir / "results.json").read_text())
    assert set(results) >= {"dataset", "net", "opt_level", "mAP", "mINP", "cmc"}
    assert results["net"] == "mobilenet_v2" and results["opt_level"] == "O0"
    assert all(0 <= results["cmc"][k] <= 1 for k in ("1", "5", "10"))
    assert results["mAP"] > results["untrained"]["mAP"] + 0.1, results
    assert (exp_dir / "ckpt.pth").is_file() and (exp_dir / "config.json").is_file()
    assert any((exp_dir / "tensorboard").iterdir())
    assert list(exp_dir.glob("stdout_*.txt")) and list(exp_dir.glob("stderr_*.txt"))
