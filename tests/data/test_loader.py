"""The training loader: augmentation is a function of (seed, epoch, sample) and leaves the caller's RNGs alone."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from bpm.data.loader import ImageDataset, sample_randomness, train_loader
from bpm.data.records import ImageRecord
from bpm.data.sampler import PKBatchSampler
from bpm.data.transforms import train_transform

# Every random step on, each often enough that two seeds practically never agree.
TRANSFORM = train_transform((32, 16), mirror=True, crop_prob=0.8, crop_ratio=0.6, erase=True, erase_prob=0.8, pad_crop=3)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[ImageRecord]:
    folder = tmp_path_factory.mktemp("images")
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 40, 20, 3), dtype=np.uint8)
    out = []
    for i, image in enumerate(pixels):
        path = folder / f"{i}.png"  # lossless: the pixels are what the transforms see
        Image.fromarray(image).save(path)
        out.append(ImageRecord(str(path), pid=i // 3, camid=i % 2))
    return out


def epoch_batches(records, workers: int, epoch: int = 0, seed: int = 7) -> list[torch.Tensor]:
    sampler = PKBatchSampler([r.pid for r in records], ids_per_batch=2, ims_per_id=2, seed=seed)
    sampler.set_epoch(epoch)
    return [images for images, *_ in train_loader(records, TRANSFORM, sampler, workers)]


def rng_states() -> tuple:
    return random.getstate(), torch.get_rng_state(), np.random.get_state()[1].tobytes()


def test_iterating_the_loader_leaves_the_global_rngs_untouched(records):
    random.seed(123)
    torch.manual_seed(123)
    before = rng_states()
    for epoch in range(2):
        assert len(epoch_batches(records, workers=0, epoch=epoch)) == 2
    after = rng_states()
    assert after[0] == before[0]
    assert torch.equal(after[1], before[1])
    assert after[2] == before[2]


def test_same_seed_gives_identical_batches_whatever_the_worker_count(records):
    single = epoch_batches(records, workers=0, epoch=1)
    again = epoch_batches(records, workers=0, epoch=1)
    parallel = epoch_batches(records, workers=2, epoch=1)
    assert len(single) == len(parallel) == 2
    for a, b, c in zip(single, again, parallel):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_samples_and_epochs_get_different_augmentations(records):
    dataset = ImageDataset(records, TRANSFORM)
    first, _, _, _ = dataset[(0, 1)]
    assert torch.equal(first, dataset[(0, 1)][0])
    assert not torch.equal(first, dataset[(0, 2)][0])
    # The sampler gives every drawn sample, within and across epochs, its own seed.
    sampler = PKBatchSampler([r.pid for r in records], ids_per_batch=2, ims_per_id=2, seed=7)
    seeds = [s for epoch in range(3) for batch in sampler.global_batches(epoch) for _, s in batch]
    assert len(set(seeds)) == len(seeds)
    assert epoch_batches(records, 0, epoch=0)[0].shape == epoch_batches(records, 0, epoch=1)[0].shape
    assert not torch.equal(epoch_batches(records, 0, epoch=0)[0], epoch_batches(records, 0, epoch=1)[0])


def test_sample_randomness_restores_the_states_after_an_error():
    before = rng_states()
    with pytest.raises(ValueError), sample_randomness(5):
        drawn = (random.random(), torch.rand(1))
        raise ValueError("a broken transform")
    after = rng_states()
    assert after[0] == before[0] and torch.equal(after[1], before[1])
    with sample_randomness(5):
        assert (random.random(), torch.rand(1)) == drawn
