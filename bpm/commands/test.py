"""``bpm test``: evaluate a weights file; the same switches as ``train.py --only_test true``."""
from __future__ import annotations

import argparse

from bpm.commands import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train.add_arguments(parser)
    parser.set_defaults(only_test=True)


def run(args: argparse.Namespace) -> int:
    args.only_test = True
    return train.run(args)
