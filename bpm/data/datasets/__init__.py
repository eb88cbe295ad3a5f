"""Dataset readers: one per on-disk layout, all returning a :class:`ReidDataset`.

``build_dataset`` is the only entry point the rest of the code uses, so the trainer and the
evaluation never know which benchmark they run on. It finds the layout by itself: the original's
converted ``images/`` + ``partitions.pkl`` wherever a dataset folder holds them, otherwise the
raw release (extracted or zipped).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from bpm.data.datasets.combined import load_combined
from bpm.data.datasets.common import IndexedDataset, find_release, relabel
from bpm.data.datasets.converted import converted_image_dir, load_converted
from bpm.data.datasets.cuhk03 import IM_TYPES, load_cuhk03
from bpm.data.datasets.market1501 import load_market_layout, load_split_folders
from bpm.data.datasets.msmt17 import load_msmt17
from bpm.data.datasets.split import split_train_val
from bpm.data.images import find_unreadable
from bpm.data.records import ReidDataset, TestSet
from bpm.errors import BpmError

log = logging.getLogger(__name__)

TRAINSET_PARTS = ("trainval", "train")
# A Market-layout release is recognised by its training folder or, in a test-only copy (no or an
# empty bounding_box_train/), by its gallery folder.
MARKET_MARKERS = ("bounding_box_train", "bounding_box_test")


@dataclass(frozen=True)
class DatasetOptions:
    """The dataset switches (``--cuhk03_type``, ``--trainset_part``, ``--skip_bad_images``, seed)."""

    cuhk03_type: str = "detected"
    trainset_part: str = "trainval"
    skip_bad_images: bool = False
    seed: int = 1
    num_val_ids: int = 100
    may_write: bool = True  # False for ``bpm data check``: a check never writes


def _load_synthetic(root: Path, options: DatasetOptions) -> IndexedDataset:
    from bpm.data.synthetic import WorldConfig, open_world

    return load_market_layout(open_world(root, WorldConfig(), may_create=options.may_write), "synthetic")


def _load_market1501(root: Path, options: DatasetOptions) -> IndexedDataset:
    release = find_release(root, ("Market-1501-v15.09.15", "Market-1501"), MARKET_MARKERS, "Market-1501 release")
    return load_market_layout(release, "market1501")


def _load_duke(root: Path, options: DatasetOptions) -> IndexedDataset:
    release = find_release(root, ("DukeMTMC-reID",), MARKET_MARKERS, "DukeMTMC-reID release")
    ds = load_market_layout(release, "duke")
    ds.layout = "DukeMTMC-reID release"
    return ds


def _load_cuhk03(root: Path, options: DatasetOptions) -> IndexedDataset:
    return load_cuhk03(root, options.cuhk03_type)


def _load_msmt17(root: Path, options: DatasetOptions) -> IndexedDataset:
    return load_msmt17(root)


def _load_folder(root: Path, options: DatasetOptions) -> IndexedDataset:
    return load_split_folders(root, "folder", "train", "query", "gallery", "train/ query/ gallery/ folder")


def _load_combined(root: Path, options: DatasetOptions) -> IndexedDataset:
    members = replace(options, trainset_part="trainval")
    return load_combined(root, DEFAULT_FOLDERS, lambda name, path: load_raw(name, path, members))


READERS: dict[str, Callable[[Path, DatasetOptions], IndexedDataset]] = {
    "synthetic": _load_synthetic,
    "market1501": _load_market1501,
    "duke": _load_duke,
    "cuhk03": _load_cuhk03,
    "msmt17": _load_msmt17,
    "combined": _load_combined,
    "folder": _load_folder,
}

# Folder names under BPM_DATA, as the original expected them. ``folder`` has none: it is the
# user's own data and needs --data_root.
DEFAULT_FOLDERS = {
    "synthetic": "synthetic",
    "market1501": "market1501",
    "duke": "duke",
    "cuhk03": "cuhk03",
    "msmt17": "msmt17",
    "combined": "market1501_cuhk03_duke",
}


def default_data_home() -> Path:
    """``$BPM_DATA`` or ``~/Dataset`` (where the original expected its data)."""
    return Path(os.environ.get("BPM_DATA", Path.home() / "Dataset")).expanduser()


def resolve_root(name: str, data_root: str | os.PathLike | None) -> Path:
    """``--data_root`` wins; otherwise the dataset's folder under ``BPM_DATA``.

    The synthetic demo world lives in the checkout's ``data/synthetic`` by default, because it
    is generated on first use and must not clutter a user's real dataset folder.
    """
    if data_root:
        return Path(data_root).expanduser()
    if name == "synthetic":
        return Path("data") / "synthetic"
    if name not in DEFAULT_FOLDERS:
        raise BpmError(f"--dataset {name} needs --data_root "
                       "(a folder with query/ and gallery/, and train/ for training)")
    return default_data_home() / DEFAULT_FOLDERS[name]


def load_raw(name: str, root: Path, options: DatasetOptions) -> IndexedDataset:
    """Index ``name`` at ``root`` with original ids (no relabelling, no validation split).

    The original's converted layout is detected first, in ``root`` itself or, for CUHK03, in
    ``root/<cuhk03_type>/`` where its transform script put it.
    """
    candidates = [root]
    if name == "cuhk03":
        candidates.append(root / options.cuhk03_type)
    if name != "combined":
        for candidate in candidates:
            if candidate.is_dir() and converted_image_dir(candidate) is not None:
                return load_converted(candidate, name, want_train_split=options.trainset_part == "train")
    return READERS[name](root, options)


def _drop_unreadable(ds: IndexedDataset) -> IndexedDataset:
    """``--skip_bad_images``: decode every image once and leave out those that fail, with a warning."""
    sets = ds.test_sets + ([ds.val] if ds.val else [])
    paths = {r.path for r in ds.train} | {r.path for t in sets for r in t.query + t.gallery + t.multi_query}
    bad = dict(find_unreadable(sorted(paths)))
    if not bad:
        return ds
    first = sorted(bad)[0]
    log.warning("warning: skipped %d unreadable images (--skip_bad_images), e.g. %s: %s", len(bad), first, bad[first])
    keep = lambda records: [r for r in records if r.path not in bad]  # noqa: E731
    fix = lambda t: TestSet(t.name, keep(t.query), keep(t.gallery), keep(t.multi_query))  # noqa: E731
    return replace(ds, train=keep(ds.train), test_sets=[fix(t) for t in ds.test_sets], val=fix(ds.val) if ds.val else None)


def _train_source(ds: IndexedDataset) -> str:
    """Where ``ds`` would have found its training images, for the "needs training images" error."""
    if ds.layout.startswith("converted"):
        return "trainval_im_names of partitions.pkl"
    return {
        "folder": "train/",
        "msmt17": "list_train.txt",
        "cuhk03": "the protocol's training split",
        "combined": "the members' training sets",
    }.get(ds.name, "bounding_box_train/")


def require_training_images(ds: IndexedDataset) -> None:
    """Refuse, in one line naming the folder, to train on a test-only dataset."""
    if not ds.train:
        raise BpmError(
            f"{ds.root}: {ds.name} has no training images ({_train_source(ds)} is missing or empty); "
            "training needs training images - a test-only folder can only be evaluated "
            "(bpm test, bpm visualize, --only_test true)"
        )


def build_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    cuhk03_type: str = "detected",
    trainset_part: str = "trainval",
    skip_bad_images: bool = False,
    seed: int = 1,
    num_val_ids: int = 100,
    require_train: bool = True,
    may_write: bool = True,
) -> IndexedDataset:
    """Index dataset ``name`` (names only, no pixels unless ``skip_bad_images``) from ``data_root``
    or its folder under ``BPM_DATA``.

    Training records carry contiguous labels 0..N-1; query/gallery records keep the dataset's ids.
    With ``trainset_part="train"``, ``val`` holds the held-out identities (see ``split.py``).

    A test-only dataset (only query and gallery images: a new camera network, a second benchmark)
    is a :class:`BpmError` with ``require_train`` (training), and otherwise comes back with an
    empty ``train`` list and no validation split (testing, visualising, ``bpm data check``).
    ``may_write=False`` (``bpm data check``) never creates anything (the synthetic world).

    Args:
        name: one of ``READERS`` (``market1501``, ``duke``, ``cuhk03``, ``msmt17``, ``combined``, ``synthetic``,
            ``folder``).
        data_root: its folder; None: its folder under ``$BPM_DATA``.
        cuhk03_type: ``detected`` or ``labeled`` boxes (CUHK03).
        trainset_part: ``trainval`` (all training identities) or ``train`` (some held out as ``val``).
        skip_bad_images: decode every image and leave out those that fail (else: refuse them).
        seed: the seed of the held-out identities.
        num_val_ids: how many identities ``train`` holds out.
        require_train: refuse a dataset without training images.
        may_write: whether a missing synthetic world may be generated.

    Returns:
        The dataset's records: ``train``, ``val`` and its test sets.
    """
    if name not in READERS:
        raise BpmError(f"--dataset: unknown dataset {name!r}; expected one of {', '.join(sorted(READERS))}")
    if cuhk03_type not in IM_TYPES:
        raise BpmError(f"--cuhk03_type: expected one of {', '.join(IM_TYPES)}, got {cuhk03_type!r}")
    if trainset_part not in TRAINSET_PARTS:
        raise BpmError(f"--trainset_part: expected train or trainval, got {trainset_part!r}")
    options = DatasetOptions(cuhk03_type, trainset_part, skip_bad_images, seed, num_val_ids, may_write)
    ds = load_raw(name, resolve_root(name, data_root), options)
    if skip_bad_images:
        ds = _drop_unreadable(ds)
    if require_train:
        require_training_images(ds)
    if not ds.train:
        return ds
    if trainset_part == "train" and ds.val is None:
        ds.train, ds.val = split_train_val(ds.train, name, seed, num_val_ids)
    ds.train = relabel(ds.train)
    return ds


__all__ = [
    "DEFAULT_FOLDERS",
    "READERS",
    "DatasetOptions",
    "IndexedDataset",
    "ReidDataset",
    "build_dataset",
    "default_data_home",
    "load_raw",
    "require_training_images",
    "resolve_root",
]
