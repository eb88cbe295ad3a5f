"""Throughput of the synthetic world generator on one core (images per minute).

Claim: the whole default demo world is drawn in well under 60 s on one core. Prints the median
over repeats of a small world's rate, then times the default world once. Run:

    OMP_NUM_THREADS=1 .venv/bin/python bench/synth_speed.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.machine import print_machine  # noqa: E402


def timed(config: WorldConfig, folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    root = generate_world(folder, config)
    seconds = time.perf_counter() - start
    return seconds, sum(json.loads((root / "world.json").read_text())["images"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print_machine()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    small = WorldConfig(num_train_ids=60, num_test_ids=30)
    with tempfile.TemporaryDirectory() as tmp:
        rates = []
        for i in range(args.repeats):
            seconds, images = timed(small, Path(tmp) / f"small{i}")
            rates.append(images / seconds * 60)
        print(f"small world ({images} images, 128x64): median {statistics.median(rates):,.0f} images/min "
              f"over {args.repeats} repeats (min {min(rates):,.0f}, max {max(rates):,.0f})")
        seconds, images = timed(WorldConfig(), Path(tmp) / "default")
        print(f"default world: {images} images in {seconds:.1f} s on one core "
              f"({images / seconds * 60:,.0f} images/min; budget 60 s)")


if __name__ == "__main__":
    main()
