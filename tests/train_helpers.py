"""Helpers shared by tests in several folders (importable because pytest.ini puts tests/ on sys.path)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bpm.cli.switches import add_train_arguments
from bpm.cli.switches import apply_recipe
from bpm.data.synthetic import WorldConfig

TINY_WORLD = WorldConfig(
    num_train_ids=16, num_test_ids=8, num_cameras=3, min_cameras_per_id=2, max_cameras_per_id=3,
    min_images_per_id_camera=2, max_images_per_id_camera=3, num_distractors=6, num_junk=3,
    image_height=64, image_width=32, seed=7,
)


def train_args(world: Path, exp_dir: Path, *extra: str) -> argparse.Namespace:
    """Parsed training switches for a few quick CPU steps on ``world``."""
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args([
        "-d", "()", "--dataset", "market1501", "--data_root", str(world), "--exp_dir", str(exp_dir),
        "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--total_epochs", "2",
        "--workers", "0", "--set_seed", "true", "--log_to_file", "false", "--rerank", "false",
        "--steps_per_log", "0", "--recipe", "original", "--net_pretrained_path", "none", *extra,
    ])
    apply_recipe(args)
    return args
