"""Reading a synthetic world's file names back (shared by the generator's and the command's tests)."""
from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


def parsed(root: Path, split: str) -> list[tuple[int, int]]:
    out = []
    for p in (root / split).iterdir():
        m = NAME.match(p.name)
        assert m, p.name
        out.append((int(m.group(1)), int(m.group(2))))
    return out
