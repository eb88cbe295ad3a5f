"""Multi-query pooling: one feature per query from all its (id, camera) tracklet images.

Market-1501's ``gt_bbox`` set holds several hand-drawn boxes of each query's person in the
query's camera; pooling them gives the "Multi Query" numbers. Kept separate from feature
extraction so it is testable without a model.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bpm.errors import BpmError

POOLING_METHODS = ("average", "max")


def pool_multi_query(
    features: np.ndarray,
    pids: Any,
    camids: Any,
    keys_pids: Any,
    keys_camids: Any,
    method: str = "average",
) -> np.ndarray:
    """Pool the rows of ``features`` sharing each key's (pid, camid); one output row per key.

    ``features``/``pids``/``camids`` describe the multi-query images; ``keys_*`` the queries.
    A key with no image is a data error (the multi-query set does not match the queries).
    """
    if method not in POOLING_METHODS:
        raise BpmError(f"multi-query pooling {method!r} is unknown; expected one of {POOLING_METHODS}")
    feats = np.asarray(features)
    pids, camids = np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
    kp, kc = np.asarray(keys_pids, dtype=np.int64), np.asarray(keys_camids, dtype=np.int64)
    if feats.ndim != 2 or feats.shape[0] != pids.size or pids.size != camids.size or kp.size != kc.size:
        raise BpmError(
            f"multi-query pooling: features {feats.shape}, {pids.size} pids, {camids.size} camids, "
            f"{kp.size} key pids and {kc.size} key camids do not line up"
        )
    pairs = np.stack([pids, camids], axis=1)
    keys = np.stack([kp, kc], axis=1)
    uniq, group = np.unique(pairs, axis=0, return_inverse=True)
    group = group.reshape(-1)
    where = {tuple(u): i for i, u in enumerate(uniq.tolist())}
    missing = [tuple(k) for k in keys.tolist() if tuple(k) not in where]
    if missing:
        raise BpmError(
            f"multi-query pooling: {len(missing)} queries have no multi-query image, "
            f"first (pid, camid) = {missing[0]}"
        )
    if method == "average":
        sums = np.zeros((len(uniq), feats.shape[1]), dtype=np.float64)
        np.add.at(sums, group, feats)
        pooled = sums / np.bincount(group, minlength=len(uniq))[:, None]
    else:
        pooled = np.full((len(uniq), feats.shape[1]), -np.inf, dtype=np.float64)
        np.maximum.at(pooled, group, feats)
    index = np.array([where[tuple(k)] for k in keys.tolist()], dtype=np.int64)
    return pooled[index].astype(feats.dtype if np.issubdtype(feats.dtype, np.floating) else np.float32)
