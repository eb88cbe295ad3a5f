"""``bpm test``: evaluate a weights file; ``train.py --only_test true`` with only the switches evaluation uses."""
from __future__ import annotations

import argparse

from bpm.commands import train
from bpm.cli.switches import add_test_arguments
from bpm.cli.run_config import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_test_arguments(parser)
    add_config_argument(parser)
    parser.set_defaults(only_test=True)


def run(args: argparse.Namespace) -> int:
    args.only_test = True
    return train.run(args)


kept_on_error = train.kept_on_error
