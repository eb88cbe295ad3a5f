"""Features of every image in a folder, written whole to a features file (``bpm extract``'s work).

HDF5 (``.h5``/``.hdf5``) is the features file every command reads (:mod:`bpm.evaluation.features_file`):
a folder with ``query/`` and ``gallery/`` gives ``<folder>/query`` and ``<folder>/gallery`` (evaluable
by ``bpm evaluate``), any other folder ``<folder>/images``, with ``pids`` and ``camids`` when every
name follows the Market/Duke pattern (``0002_c1s1_...``). ``.mat`` keeps the original's
``features`` variable and adds ``names`` (which the original forgot). The extractor is any callable
from image paths to an ``(N, D)`` array, usually a :class:`bpm.FeatureExtractor`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bpm.data.datasets.common import list_image_names
from bpm.data.datasets.market1501 import parse_market_name, read_split
from bpm.data.images import find_unreadable
from bpm.errors import BpmError
from bpm.evaluation.features_file import FOLDER_SPLIT, FeatureSplit, write_features_file
from bpm.files import atomic_write

OUTPUT_SUFFIXES = (".h5", ".hdf5", ".mat")


def market_ids(names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pids, camids)`` when every name is Market/Duke style (the dataset reader's rule), else ``None``."""
    try:
        ids = [parse_market_name(n) for n in names]
    except BpmError:
        return None
    if not ids:
        return None
    return np.array([i[0] for i in ids], dtype=np.int64), np.array([i[1] for i in ids], dtype=np.int64)


def is_test_folder(folder: Path) -> bool:
    """The test-only layout ``--dataset folder`` reads: ``query/`` and ``gallery/`` subfolders."""
    return (folder / "query").is_dir() and (folder / "gallery").is_dir()


def _image_names(folder: Path) -> list[str]:
    names = list_image_names(folder)
    if not names:
        raise BpmError(f"--images {folder}: no images (.jpg, .jpeg, .png, .bmp) found")
    return names


def readable(paths: list[str], skip_bad_images: bool) -> list[str]:
    """``paths`` that decode; every image is decoded once before any features are computed, so a bad
    file stops the command at once (naming it), not after minutes of work, or is left out with
    ``--skip_bad_images true``."""
    bad = dict(find_unreadable(paths))
    if not bad:
        return paths
    first = next(iter(bad))
    if not skip_bad_images:
        raise BpmError(f"{first}: cannot decode image ({bad[first]}); {len(bad)} unreadable image(s) under --images "
                       "(leave them out with --skip_bad_images true)")
    print(f"warning: skipped {len(bad)} unreadable image(s) (--skip_bad_images), e.g. {first}: {bad[first]}")
    return [p for p in paths if p not in bad]


def folder_splits(extractor, folder: Path, skip_bad_images: bool = False) -> dict[str, FeatureSplit]:
    """The features-file splits of ``folder``: ``<folder name>/query`` and ``/gallery`` for a test-only
    folder (read as ``--dataset folder`` reads it: Market names, junk boxes left out), so that
    ``bpm evaluate`` and ``bpm visualize`` take the file; otherwise ``<folder name>/images``."""
    name = folder.resolve().name or FOLDER_SPLIT
    if is_test_folder(folder):
        splits = {}
        for side in ("query", "gallery"):
            records = read_split(folder / side)[0]
            kept = set(readable([r.path for r in records], skip_bad_images))
            records = [r for r in records if r.path in kept]
            if not records:
                raise BpmError(f"--images {folder / side}: no images (.jpg, .jpeg, .png, .bmp) found")
            splits[f"{name}/{side}"] = FeatureSplit.from_records(extractor([r.path for r in records]), records)
        return splits
    kept = set(readable([str(folder / n) for n in _image_names(folder)], skip_bad_images))
    names = [n for n in _image_names(folder) if str(folder / n) in kept]
    paths = [str(folder / n) for n in names]
    pids, camids = market_ids(names) or (None, None)
    return {f"{name}/{FOLDER_SPLIT}": FeatureSplit(extractor(paths), names, paths, pids, camids)}


def _write_mat(out: Path, features: np.ndarray, names: list[str], attrs: dict) -> None:
    """The original's ``features`` variable, plus ``names`` (which the original forgot), ids, ``source``."""
    ids = market_ids(names)

    def write(tmp: Path) -> None:
        from scipy.io import savemat

        data = {"features": features, "names": np.array(names, dtype=object).reshape(-1, 1),  # N x 1 cell
                "source": {k: str(v) for k, v in attrs.items()}}
        if ids is not None:
            data["pids"], data["camids"] = ids
        with open(tmp, "wb") as handle:
            savemat(handle, data)

    atomic_write(out, write, "features file")


def extract_folder(extractor, folder: str | Path, out: str | Path, attrs: dict | None = None,
                   skip_bad_images: bool = False) -> tuple[np.ndarray, list[str]]:
    """Embed ``folder``'s images (sorted names) with ``extractor`` and write ``out`` whole (atomically).

    HDF5: a features file (:mod:`bpm.evaluation.features_file`); ``.mat``: the folder's own images.

    Args:
        extractor: image paths -> ``(N, D)`` features, e.g. a :class:`bpm.FeatureExtractor`.
        folder: the images (or a folder with ``query/`` and ``gallery/``).
        out: ``.h5``/``.hdf5`` or ``.mat``.
        attrs: what to record in the file (weights, network, ...).
        skip_bad_images: leave out images that do not decode (else: refuse them, naming the first).

    Returns:
        ``(features, names)``: every written row and its image name.
    """
    folder, out = Path(folder), Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise BpmError(f"--out {out}: expected a file ending in .h5, .hdf5 or .mat")
    if not folder.is_dir():
        raise BpmError(f"--images {folder}: not a folder")
    attrs = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "images": str(folder.resolve()), **(attrs or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".mat":
        names = [Path(p).name for p in readable([str(folder / n) for n in _image_names(folder)], skip_bad_images)]
        features = extractor([str(folder / n) for n in names])
        _write_mat(out, features, names, attrs)
        return features, names
    splits = folder_splits(extractor, folder, skip_bad_images)
    write_features_file(out, splits, attrs)
    return (np.concatenate([split.features for split in splits.values()]),
            [name for split in splits.values() for name in split.names])
