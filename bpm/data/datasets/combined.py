"""``combined``: the trainval sets of Market-1501, CUHK03 and DukeMTMC-reID as one training set.

Identities are relabelled member after member (Market, then CUHK03, then Duke, as the original
did) so they never collide; camera ids are shifted the same way. Testing stays per member: one
test set each, named ``market1501``, ``cuhk03`` and ``duke``, so results print per dataset.

Members are read from their own folders beside the combined folder (``<BPM_DATA>/market1501``,
...), in any layout their readers accept. If the combined folder holds the original's
``trainval_images/`` + ``partitions.pkl``, that is the training set instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from bpm.data.datasets.common import IndexedDataset, relabel
from bpm.data.datasets.converted import converted_image_dir, load_converted
from bpm.data.records import ImageRecord, TestSet

MEMBERS = ("market1501", "cuhk03", "duke")


def load_combined(
    root: Path, member_folders: dict[str, str], load_member: Callable[[str, Path], IndexedDataset]
) -> IndexedDataset:
    """``root`` is the combined folder, or a data home holding the three member folders."""
    home = root if all((root / member_folders[m]).exists() for m in MEMBERS) else root.parent
    members = [load_member(m, home / member_folders[m]) for m in MEMBERS]
    test_sets = [
        TestSet(m, t.query, t.gallery, t.multi_query) for m, ds in zip(MEMBERS, members) for t in ds.test_sets
    ]
    if root.is_dir() and converted_image_dir(root) is not None:
        train = load_converted(root, "combined", want_train_split=False).train
        layout = "converted trainval_images/ + partitions.pkl"
    else:
        train: list[ImageRecord] = []
        id_offset = cam_offset = 0
        for ds in members:
            member_train = relabel(ds.train)
            train += [ImageRecord(r.path, r.pid + id_offset, r.camid + cam_offset) for r in member_train]
            id_offset += len({r.pid for r in member_train})
            cam_offset += max((r.camid for r in member_train), default=0) + 1
        layout = "members' trainval sets"
    layout += "; test: " + ", ".join(f"{m}: {ds.layout}" for m, ds in zip(MEMBERS, members))
    return IndexedDataset(
        "combined", train, test_sets, layout=layout, root=str(root), num_junk=sum(ds.num_junk for ds in members)
    )
