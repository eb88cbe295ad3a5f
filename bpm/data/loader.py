"""Torch datasets and loaders over :class:`ImageRecord` lists."""
from __future__ import annotations

import contextlib
import random
import signal
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from bpm.data.images import read_image
from bpm.data.records import ImageRecord
from bpm.data.sampler import PKBatchSampler


@contextlib.contextmanager
def sample_randomness(seed: int) -> Iterator[None]:
    """Python's and torch's CPU random generators seeded with ``seed`` inside; the caller's states afterwards.

    torchvision's random transforms take no generator: they draw from torch's global one (and
    :class:`~bpm.data.transforms.RandomCropResize` from Python's). Seeding them inside a fork
    makes a sample's augmentation a function of its seed alone, while the process's own random
    streams (model init, dropout, a user's code; the very process with ``--workers 0``) go on
    as if no sample had been drawn. The CUDA generators are not touched.
    """
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


class ImageDataset(Dataset):
    """Returns ``(image_tensor, pid, camid, index)``.

    Indexed either by an int (test time) or by ``(index, seed)`` from :class:`PKBatchSampler`:
    the transforms then run under :func:`sample_randomness` with that seed, so augmentation
    depends only on the sample, not on the worker that happens to decode it.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]):
        index, seed = item if isinstance(item, tuple) else (item, None)
        record = self.records[index]
        image = read_image(record.path)
        with sample_randomness(seed) if seed is not None else contextlib.nullcontext():
            tensor = self.transform(image)
        return tensor, record.pid, record.camid, index


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; workers leave it to the trainer, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _loader_generator() -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from at every ``iter()``.

    Without one it takes a number from torch's global generator, shifting the caller's random
    stream each epoch. Nothing here needs that seed: training samples carry their own, and the
    test transforms are not random.
    """
    return torch.Generator()


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
        generator=_loader_generator(),
    )


def test_loader(records: Sequence[ImageRecord], transform: Callable, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        ImageDataset(records, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        generator=_loader_generator(),
    )
