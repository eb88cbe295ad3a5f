"""``--trainset_part train``: hold out identities of trainval as a validation set.

Rule (seeded, names only, never touching the test set):
- the number of held-out ids is ``num_val_ids`` (100, as the original), but at most a fifth of the
  trainval ids, so small datasets keep most ids for training;
- the ids are drawn with ``numpy.random.default_rng(seed)`` from the sorted trainval ids;
- for each held-out id seen by at least two cameras, the first image (by path) of each camera is
  a query and all its other images go to the gallery; ids seen by one camera only go wholly to the
  gallery, because the same-camera rule would leave their queries without a match.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from bpm.data.records import ImageRecord, TestSet
from bpm.errors import BpmError


def split_train_val(
    trainval: list[ImageRecord], name: str, seed: int, num_val_ids: int = 100
) -> tuple[list[ImageRecord], TestSet]:
    """Return ``(train, val)``; records keep their original ids (relabelling happens later)."""
    ids = sorted({r.pid for r in trainval})
    count = min(num_val_ids, len(ids) // 5)
    if count < 1:
        raise BpmError(
            f"--trainset_part train: {name} has {len(ids)} training ids; need at least 5 to hold some out for validation"
        )
    rng = np.random.default_rng(seed)
    val_ids = {ids[i] for i in rng.choice(len(ids), size=count, replace=False).tolist()}
    by_id_cam: dict[int, dict[int, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    train = []
    for r in trainval:
        if r.pid in val_ids:
            by_id_cam[r.pid][r.camid].append(r)
        else:
            train.append(r)
    query, gallery = [], []
    for pid in sorted(by_id_cam):
        cams = by_id_cam[pid]
        for cam in sorted(cams):
            images = sorted(cams[cam], key=lambda r: r.path)
            if len(cams) >= 2:
                query.append(images[0])
                images = images[1:]
            gallery.extend(images)
    return train, TestSet(f"{name}-val", query, gallery)
