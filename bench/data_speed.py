"""Does data loading keep the training step fed, and is indexing instant?

Prints, each a median over repeats measured in this run:
1. indexing time of a Market-1501-size release (36,036 files with real names, empty contents:
   indexing must not read pixels, so contents do not matter);
2. decoded + augmented images/s (real 128x64 JPEGs like Market's; resize 256x128, flip,
   normalise; torch DataLoader with 2 workers, batch 32);
3. training images/s of torchvision MobileNet-V2 at 256x128, batch 32, forward + backward + Adam
   on this machine's CPU; and the ratio loader / training (> 1 means the loader keeps up).

Usage: .venv/bin/python bench/data_speed.py [--images 1024] [--repeats 3] [--steps 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bpm.data.datasets import build_dataset  # noqa: E402
from bpm.data.loader import ImageDataset  # noqa: E402
from bpm.data.records import ImageRecord  # noqa: E402
from bpm.data.transforms import train_transform  # noqa: E402
from bpm.machine import print_machine  # noqa: E402

# Market-1501 split sizes (files on disk, junk included).
MARKET_FILES = {"bounding_box_train": 12936, "bounding_box_test": 19732, "query": 3368}


def make_market_names(root: Path) -> None:
    for folder, count in MARKET_FILES.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            pid = -1 if folder == "bounding_box_test" and i % 5 == 0 else i // 8
            ident = "-1" if pid == -1 else f"{pid:04d}"
            (root / folder / f"{ident}_c{i % 6 + 1}s1_{i:06d}_00.jpg").touch()


def bench_indexing(tmp: Path, repeats: int) -> float:
    root = tmp / "market1501"
    make_market_names(root)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        build_dataset("market1501", root)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_loader(tmp: Path, images: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    records = []
    for i in range(images):
        path = tmp / "jpegs" / f"{i:04d}_c1s1_000000_00.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(path, quality=90)
        records.append(ImageRecord(str(path), i, 1))
    loader = DataLoader(
        ImageDataset(records, train_transform((256, 128), mirror=True)),
        batch_size=32,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    next(iter(loader))  # start the workers before timing
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(batch[0].shape[0] for batch in loader)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_training(steps: int) -> float:
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None).features
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, weight_decay=5e-4)
    x = torch.randn(32, 3, 256, 128)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        features = net(x).mean(dim=(2, 3))
        loss = features.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step pays for allocations
            times.append(time.perf_counter() - start)
    return 32 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        index_s = bench_indexing(Path(tmp), args.repeats)
        loader_rate = bench_loader(Path(tmp), args.images, args.repeats)
    train_rate = bench_training(args.steps)
    print(f"indexing Market-size release ({sum(MARKET_FILES.values())} names): {index_s * 1000:.0f} ms (median)")
    print(f"loader, 2 workers, decode+resize 256x128+flip+normalise: {loader_rate:.0f} images/s")
    print(f"MobileNet-V2 training step on CPU (batch 32, 256x128, torch threads {torch.get_num_threads()}): "
          f"{train_rate:.1f} images/s")
    print(f"ratio loader / training: {loader_rate / train_rate:.1f}x")


if __name__ == "__main__":
    main()
