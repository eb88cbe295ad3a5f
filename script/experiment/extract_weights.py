#!/usr/bin/env python3
"""The original's ``extract_weights.py`` (same flags); all logic lives in ``bpm.commands.extract_weights``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bpm.commands.extract_weights import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
