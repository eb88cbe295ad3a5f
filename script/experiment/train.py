#!/usr/bin/env python3
"""The original's training/testing entry point; all logic lives in ``bpm.commands.train``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bpm.cli import main  # noqa: E402

if __name__ == "__main__":
    # The original's command lines keep the original's recipe (a later --recipe on the line wins).
    sys.exit(main(["train", "--recipe", "original", *sys.argv[1:]]))
