"""The original project's converted layout: ``images/`` + ``partitions.pkl``.

Its transform scripts renamed every image ``{id:08d}_{cam:04d}_{idx:08d}.jpg`` and stored the
splits as name lists with marks (0 query, 1 gallery, 2 multi-query). Users have such folders on
disk, so any dataset folder holding them is read this way. The combined set's folder holds
``trainval_images/`` and a ``partitions.pkl`` with the training names only.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from bpm.data.datasets.common import IndexedDataset
from bpm.data.partitions import load_partitions
from bpm.data.records import ImageRecord, TestSet
from bpm.errors import BpmError

_NAME = re.compile(r"^(-?[0-9]+)_([0-9]+)_([0-9]+)\.\w+$")  # ASCII digits only (see market1501._NAME)
QUERY, GALLERY, MULTI_QUERY = 0, 1, 2


def converted_name(pid: int, cam: int, idx: int) -> str:
    return f"{pid:08d}_{cam:04d}_{idx:08d}.jpg"


def parse_converted_name(name: str, where: str) -> tuple[int, int]:
    """``(pid, camid)`` of ``00000002_0001_00000000.jpg``."""
    match = _NAME.match(name)
    if match is None:
        raise BpmError(f"{where}: image name {name!r} is not of the form 00000002_0001_00000000.jpg")
    from bpm.data.datasets.market1501 import checked_pid

    return checked_pid(int(match.group(1)), f"{where}: {name}"), int(match.group(2))


def converted_image_dir(root: Path) -> Path | None:
    """The converted image folder inside ``root`` (``images/`` or ``trainval_images/``), if any."""
    if not (root / "partitions.pkl").is_file():
        return None
    for name in ("images", "trainval_images"):
        if (root / name).is_dir():
            return root / name
    return None


def _records(names: list[str], im_dir: Path, present: set[str], pkl: Path, key: str) -> list[ImageRecord]:
    missing = [n for n in names if n not in present]
    if missing:
        raise BpmError(f"{pkl}: {key} names {len(missing)} images missing from {im_dir}, e.g. {missing[0]}")
    base = str(im_dir)
    out = []
    for n in names:
        pid, cam = parse_converted_name(n, f"{pkl}[{key!r}]")
        out.append(ImageRecord(os.path.join(base, n), pid, cam))
    return out


def _marked_set(name: str, records: list[ImageRecord], marks: list[int], pkl: Path) -> TestSet:
    unknown = sorted(set(marks) - {QUERY, GALLERY, MULTI_QUERY})
    if unknown:
        raise BpmError(f"{pkl}: marks must be 0 (query), 1 (gallery) or 2 (multi-query), found {unknown[0]}")
    pick = lambda mark: [r for r, m in zip(records, marks) if m == mark]  # noqa: E731
    return TestSet(name, pick(QUERY), pick(GALLERY), pick(MULTI_QUERY))


def load_converted(root: Path, name: str, want_train_split: bool) -> IndexedDataset:
    """Read ``root/images`` + ``root/partitions.pkl``.

    With ``want_train_split`` and a file that carries the original's own train/val split
    (``train_im_names``, ``val_im_names``, ``val_marks``), that split is used as-is, so results
    stay comparable with the original; otherwise ``build_dataset`` makes its own.
    """
    im_dir = converted_image_dir(root)
    if im_dir is None:
        raise BpmError(f"{root}: expected images/ (or trainval_images/) and partitions.pkl")
    pkl = root / "partitions.pkl"
    parts = load_partitions(pkl)
    present = set(os.listdir(im_dir))
    test_sets = []
    if "test_im_names" in parts:
        test = _records(parts["test_im_names"], im_dir, present, pkl, "test_im_names")
        test_sets.append(_marked_set(name, test, parts["test_marks"], pkl))
    val = None
    if want_train_split and "train_im_names" in parts and "val_im_names" in parts:
        train = _records(parts["train_im_names"], im_dir, present, pkl, "train_im_names")
        val_records = _records(parts["val_im_names"], im_dir, present, pkl, "val_im_names")
        val = _marked_set(f"{name}-val", val_records, parts["val_marks"], pkl)
    else:
        train = _records(parts["trainval_im_names"], im_dir, present, pkl, "trainval_im_names")
    return IndexedDataset(name, train, test_sets, val, layout="converted images/ + partitions.pkl", root=str(root))
