"""Write the original project's converted layout (``images/`` + ``partitions.pkl``) from raw releases.

``script/dataset/transform_*.py`` and ``combine_trainval_sets.py`` are thin wrappers around these
functions. Training does not need them (every raw layout is read directly); they exist for users
who share converted folders with the original code. Output names are
``{id:08d}_{cam:04d}_{idx:08d}.jpg``; marks are 0 query, 1 gallery, 2 multi-query; the pickle is
protocol 2 with plain lists and dicts, readable by the original under Python 2 and 3.
"""
from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Callable


from bpm.data.datasets.common import find_release, relabel
from bpm.data.datasets.converted import converted_name, parse_converted_name
from bpm.data.datasets.cuhk03 import (
    COLUMNS_PER_SIDE,
    IM_TYPES,
    records_from_protocol_mat,
    records_from_split_pkl,
    ensure_images,
    parse_cache_name,
)
from bpm.data.datasets.market1501 import load_market_layout
from bpm.data.datasets.split import split_train_val
from bpm.data.images import read_image
from bpm.data.partitions import load_partitions, save_pickle
from bpm.data.records import ImageRecord, ReidDataset, TestSet
from bpm.errors import BpmError


def _copy_image(src: str, dst: Path) -> None:
    """Copy JPEGs byte for byte; re-encode anything else (CUHK03's PNGs) as JPEG."""
    if src.lower().endswith((".jpg", ".jpeg")):
        shutil.copyfile(src, dst)
    else:
        read_image(src).save(dst, quality=95)  # 16-bit and float pixels scaled, not clipped


def _counter_namer() -> Callable[[ImageRecord], str]:
    """The original's naming: images of one (id, camera) numbered 0, 1, ... in the order seen."""
    seen: dict[tuple[int, int], int] = defaultdict(int)

    def name(record: ImageRecord) -> str:
        idx = seen[(record.pid, record.camid)]
        seen[(record.pid, record.camid)] += 1
        return converted_name(record.pid, record.camid, idx)

    return name


def _ids2labels(names: list[str]) -> dict[int, int]:
    ids = sorted({parse_converted_name(n, "partitions")[0] for n in names})
    return {pid: label for label, pid in enumerate(ids)}


def write_converted(
    ds: ReidDataset,
    save_dir: Path,
    namer: Callable[[ImageRecord], str] | None = None,
    seed: int = 1,
    num_val_ids: int = 100,
) -> Path:
    """Copy ``ds``'s images (original ids) into ``save_dir/images`` and write ``partitions.pkl``."""
    save_dir = Path(save_dir)
    im_dir = save_dir / "images"
    im_dir.mkdir(parents=True, exist_ok=True)
    namer = namer or _counter_namer()
    (test,) = ds.test_sets
    names: dict[str, str] = {}
    for record in ds.train + test.gallery + test.query + test.multi_query:
        if record.path not in names:
            names[record.path] = namer(record)
            _copy_image(record.path, im_dir / names[record.path])

    def renamed(records: list[ImageRecord]) -> list[ImageRecord]:
        out = []
        for r in records:
            pid, cam = parse_converted_name(names[r.path], str(im_dir))
            out.append(ImageRecord(names[r.path], pid, cam))
        return out

    trainval = renamed(ds.train)
    q, mq, g = (renamed(x) for x in (test.query, test.multi_query, test.gallery))
    partitions = {
        "trainval_im_names": [r.path for r in trainval],
        "trainval_ids2labels": _ids2labels([r.path for r in trainval]),
        "test_im_names": [r.path for r in q + mq + g],
        "test_marks": [0] * len(q) + [2] * len(mq) + [1] * len(g),
    }
    if len({r.pid for r in trainval}) >= 5:  # too few ids for a validation split otherwise
        train, val = split_train_val(trainval, ds.name, seed, num_val_ids)
        partitions["train_im_names"] = [r.path for r in train]
        partitions["train_ids2labels"] = _ids2labels(partitions["train_im_names"])
        partitions["val_im_names"] = [r.path for r in val.query + val.gallery]
        partitions["val_marks"] = [0] * len(val.query) + [1] * len(val.gallery)
    save_pickle(partitions, save_dir / "partitions.pkl")
    return save_dir / "partitions.pkl"


def transform_market_like(zip_file: Path, save_dir: Path, name: str, folder: str) -> Path:
    """Market-1501 or DukeMTMC-reID: the zip (or its extracted folder) to the converted layout."""
    release = find_release(Path(zip_file), (folder,), "bounding_box_train", f"{name} release")
    return write_converted(load_market_layout(release, name), save_dir)


def transform_market1501(zip_file: Path, save_dir: Path) -> Path:
    return transform_market_like(zip_file, save_dir, "market1501", "Market-1501-v15.09.15")


def transform_duke(zip_file: Path, save_dir: Path) -> Path:
    return transform_market_like(zip_file, save_dir, "duke", "DukeMTMC-reID")


def transform_cuhk03(zip_file: Path, train_test_partition_file: Path, save_dir: Path) -> list[Path]:
    """Both image types to ``save_dir/{detected,labeled}/``, split by the new protocol.

    ``train_test_partition_file`` is ``re_ranking_train_test_split.pkl`` (as in the original) or
    a ``cuhk03_new_protocol_config_<type>.mat`` whose type is taken from its name.
    """
    release = find_release(Path(zip_file), ("cuhk03_release",), "cuhk-03.mat", "CUHK03 release")
    split_file = Path(train_test_partition_file)
    if not split_file.is_file():
        raise BpmError(f"--train_test_partition_file {split_file}: file not found")
    written = []
    for im_type in IM_TYPES:
        if split_file.suffix == ".mat" and im_type not in split_file.name:
            continue
        cache, rows = ensure_images(release / "cuhk-03.mat", im_type)
        present = set(os.listdir(cache))
        if split_file.suffix == ".mat":
            train, query, gallery = records_from_protocol_mat(split_file, cache, present)
        else:
            train, query, gallery = records_from_split_pkl(split_file, im_type, cache, present, rows)
        offsets = [sum(rows[:i]) for i in range(len(rows))]

        def original_name(record: ImageRecord) -> str:
            pair, person, column = parse_cache_name(os.path.basename(record.path), record.path)
            side, idx = divmod(column, COLUMNS_PER_SIDE)
            return converted_name(offsets[pair] + person, side, idx)

        ds = ReidDataset("cuhk03", train, [TestSet("cuhk03", query, gallery)])
        written.append(write_converted(ds, Path(save_dir) / im_type, namer=original_name))
    return written


def combine_trainval_sets(im_dirs: list[Path], partition_files: list[Path], save_dir: Path) -> Path:
    """Trainval images of several converted datasets, ids shifted to follow one another."""
    save_dir = Path(save_dir)
    out_dir = save_dir / "trainval_images"
    out_dir.mkdir(parents=True, exist_ok=True)
    all_names: list[str] = []
    offset = 0
    for im_dir, partition_file in zip(im_dirs, partition_files):
        names = sorted(load_partitions(partition_file)["trainval_im_names"])
        records = [ImageRecord(n, *parse_converted_name(n, str(partition_file))) for n in names]
        namer = _counter_namer()
        for source, r in zip(names, relabel(records)):
            src = Path(im_dir) / source
            if not src.is_file():
                raise BpmError(f"{partition_file}: names image {source} that is not in {im_dir}")
            new = namer(ImageRecord(source, r.pid + offset, r.camid))
            shutil.copyfile(src, out_dir / new)
            all_names.append(new)
        offset += len({r.pid for r in records})
    save_pickle(
        {"trainval_im_names": all_names, "trainval_ids2labels": {i: i for i in range(offset)}},
        save_dir / "partitions.pkl",
    )
    return save_dir / "partitions.pkl"
