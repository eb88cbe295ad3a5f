"""``bpm plot EXP_DIR``: redraw a run's training curves from its ``train_log.jsonl``.

Training writes the same PNG when it ends; this command is for runs still going (the log is
flushed every step) or interrupted, and for runs made before plots existed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bpm.errors import BpmError
from bpm.vis.plots import plot_training_curves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dir", help="experiment folder holding train_log.jsonl")
    parser.add_argument("--out", default="", help="PNG to write (default: EXP_DIR/training_curves.png)")


def run(args: argparse.Namespace) -> int:
    exp_dir = Path(args.exp_dir)
    if not exp_dir.is_dir():
        raise BpmError(f"{exp_dir}: experiment folder not found")
    path = plot_training_curves(exp_dir, args.out or None)
    print(f"Training curves written to {path}")
    return 0
