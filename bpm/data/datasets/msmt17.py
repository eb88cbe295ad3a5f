"""MSMT17 (V1 or V2) from its list files.

``list_{train,val,query,gallery}.txt`` hold ``<relative path> <label>`` lines; the label is the
identity, the camera is the third field of the file name (``0000_000_01_0303morning_0015_0.jpg``
-> camera 1, 15 cameras in all). Training uses train + val (the usual 1,041 ids), images under
``train/`` and ``test/`` (V1) or ``mask_train_v2/`` and ``mask_test_v2/`` (V2). A release without
``list_train.txt`` is test-only.
"""
from __future__ import annotations

import os
from pathlib import Path

from bpm.data.datasets.common import IndexedDataset, find_release
from bpm.data.records import ImageRecord, TestSet
from bpm.errors import BpmError

_TRAIN_DIRS = ("train", "mask_train_v2")
_TEST_DIRS = ("test", "mask_test_v2")


def parse_msmt_camera(name: str, where: str) -> int:
    fields = os.path.basename(name).split("_")
    if len(fields) < 3 or not fields[2].isdigit():
        raise BpmError(f"{where}: image name {name!r} is not of the form 0000_000_01_0303morning_0015_0.jpg")
    return int(fields[2])


def _read_list(list_file: Path, image_dirs: list[Path]) -> list[ImageRecord]:
    if not list_file.is_file():
        raise BpmError(f"{list_file}: missing list file (expected '<path> <label>' lines)")
    dirs = [str(d) for d in image_dirs]
    records = []
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_file}:{number}"
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise BpmError(f"{where}: expected '<relative path> <label>', got {line.strip()!r}")
            rel, label = fields
            path = next((p for p in (os.path.join(d, rel) for d in dirs) if os.path.isfile(p)), None)
            if path is None:
                raise BpmError(f"{where}: names image {rel} that is not in {' or '.join(map(str, image_dirs))}")
            records.append(ImageRecord(path, int(label), parse_msmt_camera(rel, where)))
    return records


def load_msmt17(root: Path) -> IndexedDataset:
    release = find_release(root, ("MSMT17_V2", "MSMT17_V1"), "list_query.txt", "MSMT17 (MSMT17_V1/ or MSMT17_V2/)")
    train_dirs = [release / d for d in _TRAIN_DIRS if (release / d).is_dir()] + [release]
    test_dirs = [release / d for d in _TEST_DIRS if (release / d).is_dir()] + [release]
    # Without list_train.txt the release is test-only: it can be evaluated, not trained on.
    train = _read_list(release / "list_train.txt", train_dirs) if (release / "list_train.txt").is_file() else []
    if (release / "list_val.txt").is_file():
        train += _read_list(release / "list_val.txt", train_dirs)
    query = _read_list(release / "list_query.txt", test_dirs)
    gallery = _read_list(release / "list_gallery.txt", test_dirs)
    return IndexedDataset(
        "msmt17", train, [TestSet("msmt17", query, gallery)], layout=f"{release.name} list files", root=str(release)
    )
