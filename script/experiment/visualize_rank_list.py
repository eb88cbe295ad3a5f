#!/usr/bin/env python3
"""The original's rank-list script (same flags); all logic lives in ``bpm.commands.visualize``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bpm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
