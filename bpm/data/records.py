"""Plain records that every dataset reader produces and every consumer reads.

Data flows one way: a reader turns files on disk into these lists; the sampler, loaders,
evaluation and visualisation only ever see them, never the on-disk layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

#: The identity label of a junk gallery image (Market-1501's ``-1_...`` files): ignored when ranking.
JUNK_PID = -1


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path, its identity label and its camera id.

    For training records ``pid`` is the contiguous label (0..num_ids-1) used by the loss;
    for query/gallery records it is the dataset's original identity number (0 = distractor).
    """

    path: str
    pid: int
    camid: int


@dataclass
class TestSet:
    """One evaluation protocol instance: queries ranked against a gallery."""

    name: str
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    multi_query: list[ImageRecord] = field(default_factory=list)


@dataclass
class ReidDataset:
    """What a reader returns: a training list plus one or more test sets.

    ``combined`` returns one test set per member dataset; every other reader returns one.
    ``val`` is the held-out split carved from trainval when ``--trainset_part train`` is used.
    """

    name: str
    train: list[ImageRecord]
    test_sets: list[TestSet]
    val: TestSet | None = None

    @property
    def num_train_ids(self) -> int:
        return len({r.pid for r in self.train})


def id_arrays(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """``(pids, camids)`` of ``records`` as int64 arrays, the form the evaluation and features files take.

    Args:
        records: query or gallery records, in row order.

    Returns:
        Two ``(N,)`` int64 arrays: identity labels and camera ids.
    """
    return np.array([r.pid for r in records], dtype=np.int64), np.array([r.camid for r in records], dtype=np.int64)
