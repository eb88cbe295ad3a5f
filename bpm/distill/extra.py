"""``--distill_extra FOLDER``: person crops without identity labels that only the distillation terms see.

Unlabelled crops from the deployment's own cameras are the cheapest data there is; the teacher
labels them with its embeddings. Every training batch (its P x K labelled samples) gets
``per_batch`` extra crops appended, drawn without repeats within a batch (with repeats only when the folder holds fewer) from a stream seeded by
(seed, epoch, step, rank), so a resumed run sees exactly the same extras. The records carry
label ``-1``, which the ID, triplet and centre terms skip.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from bpm.data.datasets.common import IMAGE_SUFFIXES
from bpm.data.records import ImageRecord
from bpm.data.sampler import PKBatchSampler, Sample
from bpm.errors import BpmError

UNLABELLED = -1


def extra_records(folder: str | Path) -> list[ImageRecord]:
    """Every image under ``folder`` (recursively, sorted) as an unlabelled record."""
    root = Path(folder)
    if not root.is_dir():
        raise BpmError(f"--distill_extra: {root} is not a folder")
    paths = sorted(str(Path(d) / n) for d, _dirs, names in os.walk(root) for n in names
                   if n.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise BpmError(f"--distill_extra: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return [ImageRecord(p, UNLABELLED, -1) for p in paths]


class ExtraBatchSampler:
    """A :class:`PKBatchSampler` whose batches each get ``per_batch`` samples of ``count`` extra records
    (dataset indices ``offset .. offset+count-1``), a pure function of (seed, epoch, step, rank)."""

    def __init__(self, labelled: PKBatchSampler, offset: int, count: int, per_batch: int) -> None:
        self.labelled, self.offset, self.count, self.per_batch = labelled, offset, count, per_batch

    @property
    def seed(self) -> int:
        return self.labelled.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.labelled.seed = value

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.labelled.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return len(self.labelled)

    def __iter__(self) -> Iterator[list[Sample]]:
        sampler = self.labelled
        for step, batch in enumerate(sampler, start=sampler.start_step):
            rng = np.random.default_rng([sampler.seed, 1, sampler.epoch, step, sampler.rank])
            picks = rng.choice(self.count, size=self.per_batch, replace=self.count < self.per_batch)
            seeds = rng.integers(0, 2**31 - 1, self.per_batch)
            yield batch + [(self.offset + int(i), int(s)) for i, s in zip(picks, seeds)]
