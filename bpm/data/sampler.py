"""P x K identity sampling for batch-hard mining.

Each batch holds ``ids_per_batch`` (P) identities with ``ims_per_id`` (K) images each, so every
anchor has positives and negatives in the batch. Identities with fewer than K images are sampled
with replacement. What an epoch is (``epoch="ids"|"images"``):

- ``ids`` (the original's): one pass over a random permutation of the identities, so an epoch
  shows K images of each identity (2,972 of CUHK03's 7,239 images at K=4); the last incomplete
  group of identities is dropped (it comes first in some later epoch's permutation instead).
- ``images`` (torchreid's and fast-reid's meaning, the strong baseline's): as many batches as
  the training images fill, each identity drawn with probability proportional to its number of
  images, so an epoch shows about as many images as the training set has and "30 epochs" means
  the same budget as in those frameworks.

Everything is a pure function of ``(seed, epoch)``: resuming at (epoch, step) reproduces the
exact batches, and each sample carries its own augmentation seed so results do not depend on
how many loader workers there are or which worker decodes what. In distributed training each
rank takes a contiguous slice of whole identities of the same global batch.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch

from bpm.errors import BpmError

# (dataset index, augmentation seed)
Sample = tuple[int, int]


class PKBatchSampler(torch.utils.data.Sampler[list[Sample]]):
    def __init__(
        self,
        labels: Sequence[int],
        ids_per_batch: int,
        ims_per_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: str = "ids",
    ) -> None:
        if epoch not in ("ids", "images"):
            raise BpmError(f"--sampler_epoch: expected ids or images, got {epoch!r}")
        if ids_per_batch < 2:
            raise BpmError(f"--ids_per_batch: batch-hard mining needs at least 2 identities, got {ids_per_batch}")
        if ims_per_id < 1:
            raise BpmError(f"--ims_per_id: expected at least 1, got {ims_per_id}")
        if ids_per_batch % world_size:
            raise BpmError(
                f"--ids_per_batch {ids_per_batch} must divide evenly over {world_size} processes (whole identities per rank)"
            )
        self.index_by_id: dict[int, np.ndarray] = {}
        grouped: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            grouped[int(label)].append(index)
        self.ids = np.array(sorted(grouped))
        self.index_by_id = {pid: np.array(grouped[pid]) for pid in self.ids}
        if len(self.ids) < ids_per_batch:
            raise BpmError(
                f"--ids_per_batch {ids_per_batch} exceeds the {len(self.ids)} training identities available"
            )
        self.ids_per_batch = ids_per_batch
        self.ims_per_id = ims_per_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch_kind = epoch
        counts = np.array([len(self.index_by_id[pid]) for pid in self.ids], dtype=np.float64)
        self.id_weights = counts / counts.sum()
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch to draw, and how many of its batches to skip (mid-epoch resume)."""
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        if self.epoch_kind == "images":
            total = sum(len(v) for v in self.index_by_id.values())
            return max(1, total // (self.ids_per_batch * self.ims_per_id))
        return len(self.ids) // self.ids_per_batch

    def _batch_ids(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The identities of each batch of an epoch."""
        if self.epoch_kind == "images":
            return [rng.choice(self.ids, size=self.ids_per_batch, replace=False, p=self.id_weights)
                    for _ in range(len(self))]
        order = rng.permutation(self.ids)
        return [order[b * self.ids_per_batch:(b + 1) * self.ids_per_batch] for b in range(len(self))]

    def global_batches(self, epoch: int) -> list[list[Sample]]:
        """All batches of an epoch, for every rank, as a list of P*K samples each."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for batch_ids in self._batch_ids(rng):
            batch: list[Sample] = []
            for pid in batch_ids:
                pool = self.index_by_id[int(pid)]
                picks = rng.choice(pool, size=self.ims_per_id, replace=len(pool) < self.ims_per_id)
                batch.extend((int(i), int(s)) for i, s in zip(picks, rng.integers(0, 2**31 - 1, self.ims_per_id)))
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[Sample]]:
        per_rank = self.ids_per_batch // self.world_size * self.ims_per_id
        for batch in self.global_batches(self.epoch)[self.start_step :]:
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]
