"""Feature extraction: images -> FP32 embeddings, under the precision policy, without autograd."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bpm.data.loader import test_loader
from bpm.data.records import ImageRecord
from bpm.data.transforms import test_transform
from bpm.precision import PrecisionPolicy


@torch.inference_mode()
def embed_batch(model: torch.nn.Module, images: torch.Tensor, policy: PrecisionPolicy, flip: bool = False) -> torch.Tensor:
    """Embeddings of one batch as FP32; with ``flip``, averaged with the mirrored images' embeddings.

    The policy picks the memory layout (channels-last where it is faster and safe:
    bench/infer_speed.py measured up to ~2x for MobileNet-V2 at batch 32 on CPU).
    """
    images = policy.prepare_input(images)
    with policy.autocast():
        features = model(images).float()
        if flip:
            features = (features + model(torch.flip(images, dims=[3])).float()) / 2
    return features


def extract_features(
    model: torch.nn.Module,
    records: Sequence[ImageRecord],
    policy: PrecisionPolicy,
    resize_h_w: tuple[int, int],
    batch_size: int = 64,
    workers: int = 2,
    flip: bool = False,
    normalize: bool = False,
    desc: str = "features",
    shard: bool = False,
) -> np.ndarray:
    """``[len(records), D]`` float32 features in record order, optionally L2-normalised.

    With ``shard`` inside a multi-process job, each rank embeds its own whole batches of the
    single-process batching and the ranks' rows are gathered in order, so every rank returns
    exactly the single-process array.
    """
    if shard:
        from bpm.distributed import all_gather_rows, current_context, shard_range

        ctx = current_context()
        if ctx.enabled:
            mine = shard_range(len(records), batch_size, ctx.rank, ctx.world_size)
            local = extract_features(model, list(records)[mine.start : mine.stop], policy, resize_h_w, batch_size,
                                     workers, flip, normalize, desc)
            return all_gather_rows(ctx, torch.from_numpy(local)).numpy()
    model.eval()
    loader = test_loader(records, test_transform(resize_h_w), batch_size, workers)
    chunks = []
    for images, _pids, _camids, _index in tqdm(loader, desc=desc, disable=not sys.stdout.isatty(), leave=False):
        features = embed_batch(model, images, policy, flip)
        if normalize:
            features = F.normalize(features, dim=1)
        chunks.append(features.cpu())
    if not chunks:
        return np.zeros((0, getattr(model, "feature_dim", 0)), dtype=np.float32)
    return torch.cat(chunks).numpy()


def degenerate_rows(features: np.ndarray) -> dict[str, int]:
    """How many feature rows are unusable: with a non-finite value, or all zero.

    Half precision can produce either without any error: an untrained MobileNet-V2's embeddings
    are ~1e-9 in FP32 and underflow to exactly zero in float16, large activations overflow to
    inf. Distances between such rows are all ties (or NaN), so the metrics computed from them
    look like chance and mean nothing.
    """
    if features.size == 0:
        return {"non_finite": 0, "all_zero": 0, "near_constant": 0}
    finite = np.isfinite(features).all(axis=1)
    all_zero = finite & ~features.any(axis=1)
    return {"non_finite": int((~finite).sum()), "all_zero": int(all_zero.sum()),
            "near_constant": near_constant_rows(features[finite & ~all_zero])}


# Rows closer than this (relative to the features' size) to their common mean carry no identity.
NEAR_CONSTANT = 1e-4


def near_constant_rows(features: np.ndarray) -> int:
    """How many rows are (nearly) the same vector for every image: 0, or all of them.

    A network whose output does not depend on its input (dead ReLUs, a collapsed embedding, a
    constant non-zero feature) ranks by ties and rounding, i.e. by gallery order; all-zero rows
    are only the most visible case. Computed in float64 so a large common offset does not hide it.
    """
    if len(features) < 2:
        return 0
    rows = features.astype(np.float64)
    mean = rows.mean(axis=0)
    scale = float(np.abs(rows).max())
    spread = float(np.abs(rows - mean).max())
    return len(rows) if scale > 0 and spread <= NEAR_CONSTANT * scale else 0


def save_features(path: str | Path, features: np.ndarray, records: Sequence[ImageRecord], split: str) -> None:
    """Append one split's features, names, pids and camids to an HDF5 file (group per split).

    A low-level building block (tests, scripts); the commands write whole files with
    :func:`write_features_file`, so an earlier model's test sets never survive in them.
    """
    import h5py

    with h5py.File(path, "a") as handle:
        _write_split(handle, features, records, split)


def write_features_file(path: str | Path, splits: dict[str, tuple[np.ndarray, Sequence[ImageRecord]]],
                        attrs: dict[str, object]) -> Path:
    """Write every split (``"<test set>/query"`` -> (features, records)) to a NEW HDF5 file at ``path``,
    atomically, with ``attrs`` (weights, network, run folder, time) as file attributes.

    Why never append: ``bpm evaluate`` reports every test set it finds, so a group left by an
    earlier model would be reported as this model's.
    """
    import h5py

    from bpm.engine.outputs import atomic_write

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            for key, value in attrs.items():
                handle.attrs[key] = "" if value is None else (value if isinstance(value, (int, float)) else str(value))
            for split, (features, records) in splits.items():
                _write_split(handle, features, records, split)

    return atomic_write(path, write, "features file")


def _write_split(handle, features: np.ndarray, records: Sequence[ImageRecord], split: str) -> None:
    import h5py

    if split in handle:
        del handle[split]
    group = handle.create_group(split)
    group.create_dataset("features", data=features)
    group.create_dataset("names", data=np.array([Path(r.path).name for r in records], dtype=h5py.string_dtype()))
    group.create_dataset("paths", data=np.array([r.path for r in records], dtype=h5py.string_dtype()))
    group.create_dataset("pids", data=np.array([r.pid for r in records], dtype=np.int64))
    group.create_dataset("camids", data=np.array([r.camid for r in records], dtype=np.int64))
