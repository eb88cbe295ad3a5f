"""Feature extraction: images -> FP32 embeddings, under the precision policy, without autograd.

The one extraction path: evaluation (:func:`extract_features` over dataset records),
``bpm.FeatureExtractor`` and ``bpm export``'s verification (:func:`embed_images` over paths, PIL
images or arrays) all end in :func:`embed_batches`, so flip, normalisation, memory layout and
precision are decided in one place and every user gets the same numbers for the same images.
"""
from __future__ import annotations

import sys
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bpm.data.images import ImageLike
from bpm.data.loader import test_loader
from bpm.data.records import ImageRecord
from bpm.data.transforms import image_batch, test_transform
from bpm.distributed import DistContext, all_gather_rows, shard_range
from bpm.models.input_spec import InputSpec
from bpm.precision import PrecisionPolicy



@torch.inference_mode()
def embed_batch(model: torch.nn.Module, images: torch.Tensor, policy: PrecisionPolicy, flip: bool = False,
                normalize: bool = False) -> torch.Tensor:
    """Embeddings of one batch as FP32; with ``flip``, averaged with the mirrored images' embeddings;
    with ``normalize``, L2-normalised (after the flip average).

    The policy picks the memory layout (channels-last where it is faster and safe:
    bench/infer_speed.py measured up to ~2x for MobileNet-V2 at batch 32 on CPU).
    """
    images = policy.prepare_input(images)
    with policy.autocast():
        features = model(images).float()
        if flip:
            features = (features + model(torch.flip(images, dims=[3])).float()) / 2
    return F.normalize(features, dim=1) if normalize else features


def embed_batches(model: torch.nn.Module, batches: Iterable[torch.Tensor], policy: PrecisionPolicy,
                  flip: bool = False, normalize: bool = False) -> np.ndarray:
    """``[N, D]`` float32 features of preprocessed ``[n, 3, H, W]`` batches, in order (eval mode)."""
    model.eval()
    chunks = [embed_batch(model, images, policy, flip, normalize).cpu() for images in batches]
    if not chunks:
        return np.zeros((0, getattr(model, "feature_dim", 0)), dtype=np.float32)
    return torch.cat(chunks).numpy()


def image_tensor(items: Sequence[ImageLike], spec: InputSpec | tuple[int, int]) -> torch.Tensor:
    """``[N, 3, H, W]`` float32 batch of :func:`bpm.data.transforms.model_input` under the model's input spec."""
    return torch.from_numpy(image_batch(items, spec))


def embed_images(model: torch.nn.Module, items: Sequence[ImageLike], policy: PrecisionPolicy,
                 spec: InputSpec | tuple[int, int], batch_size: int = 32, flip: bool = False,
                 normalize: bool = False) -> np.ndarray:
    """``[len(items), D]`` float32 features of paths, PIL images or arrays, ``batch_size`` at a time.

    Decoding and resizing happen batch by batch, so memory holds one batch of pixels, not all.
    """
    batches = (image_tensor(items[i:i + batch_size], spec) for i in range(0, len(items), batch_size))
    return embed_batches(model, batches, policy, flip, normalize)


def extract_features(
    model: torch.nn.Module,
    records: Sequence[ImageRecord],
    policy: PrecisionPolicy,
    spec: InputSpec | tuple[int, int],
    batch_size: int = 64,
    workers: int = 2,
    flip: bool = False,
    normalize: bool = False,
    desc: str = "features",
    ctx: DistContext | None = None,
) -> np.ndarray:
    """``[len(records), D]`` float32 features in record order, optionally L2-normalised.

    Images are decoded by a data loader (``workers`` processes). With ``ctx`` of a multi-process
    job, each rank embeds its own whole batches of the single-process batching and the ranks' rows
    are gathered in order, so every rank returns exactly the single-process array; ``None`` (or a
    world of one) is a single process.
    """
    if ctx is not None and ctx.enabled:
        mine = shard_range(len(records), batch_size, ctx.rank, ctx.world_size)
        local = extract_features(model, list(records)[mine.start : mine.stop], policy, spec, batch_size,
                                 workers, flip, normalize, desc)
        return all_gather_rows(ctx, torch.from_numpy(local)).numpy()
    loader = test_loader(records, test_transform(spec), batch_size, workers)
    progress = tqdm(loader, desc=desc, disable=not sys.stdout.isatty(), leave=False)
    return embed_batches(model, (images for images, _pids, _camids, _index in progress), policy, flip, normalize)


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length by the operation extraction's ``normalize`` uses, for saved features."""
    return F.normalize(torch.from_numpy(np.array(features, dtype=np.float32)), dim=1).numpy()


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
