"""Torch datasets and loaders over :class:`ImageRecord` lists."""
from __future__ import annotations

import random
import signal
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from bpm.data.images import read_image
from bpm.data.records import ImageRecord
from bpm.data.sampler import PKBatchSampler


class ImageDataset(Dataset):
    """Returns ``(image_tensor, pid, camid, index)``.

    Indexed either by an int (test time) or by ``(index, seed)`` from :class:`PKBatchSampler`:
    the seed re-seeds Python's and torch's RNGs before the random transforms, so augmentation
    depends only on the sample, not on the worker that happens to decode it.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]):
        if isinstance(item, tuple):
            index, seed = item
            random.seed(seed)
            torch.manual_seed(seed)
        else:
            index = item
        record = self.records[index]
        return self.transform(read_image(record.path)), record.pid, record.camid, index


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; workers leave it to the trainer, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_loader(
    records: Sequence[ImageRecord], transform: Callable, batch_sampler: PKBatchSampler, workers: int
) -> DataLoader:
    return DataLoader(
        ImageDataset(records, transform),
        batch_sampler=batch_sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_sigint,
        pin_memory=torch.cuda.is_available(),
    )


def test_loader(records: Sequence[ImageRecord], transform: Callable, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        ImageDataset(records, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )
