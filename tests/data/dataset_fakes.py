"""Tiny but real-shaped copies of every dataset layout, built in a temporary folder.

Folder structures and file names are the real ones; images are tiny real JPEG/PNG files so
decoding checks run in milliseconds.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from scipy.io import savemat


def write_jpeg(path: Path, value: int = 128, size: tuple[int, int] = (8, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, quality=90)
    return path


def market_name(pid: int, cam: int, k: int, duke: bool = False) -> str:
    ident = "-1" if pid == -1 else f"{pid:04d}"
    return f"{ident}_c{cam}_f{k:07d}.jpg" if duke else f"{ident}_c{cam}s1_{k:06d}_00.jpg"


# (pid, cam, count) per split; shared by the Market and Duke fakes.
TRAIN = [(pid, cam, 2) for pid in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10) for cam in (1, 2)]
QUERY = [(11, 1, 1), (12, 1, 1), (12, 3, 1)]
GALLERY = [(11, 2, 2), (11, 1, 1), (12, 2, 1), (13, 4, 1), (0, 1, 2), (-1, 1, 3)]
GT_BBOX = [(11, 1, 2), (12, 3, 1), (12, 5, 1), (13, 4, 1)]


def _fill(folder: Path, spec, duke: bool) -> list[str]:
    names = []
    k = 0
    for pid, cam, count in spec:
        for _ in range(count):
            k += 1
            names.append(market_name(pid, cam, k, duke))
            write_jpeg(folder / names[-1])
    return names


def make_market(parent: Path, top: str = "Market-1501-v15.09.15", duke: bool = False) -> Path:
    root = parent / top
    _fill(root / "bounding_box_train", TRAIN, duke)
    _fill(root / "query", QUERY, duke)
    _fill(root / "bounding_box_test", GALLERY, duke)
    if not duke:
        _fill(root / "gt_bbox", GT_BBOX, duke)
    return root


# CUHK03: two camera pairs with 4 and 3 persons; detected has empty cells.
CUHK_ROWS = [4, 3]
DETECTED_EMPTY = {(0, 1, 3), (0, 1, 4), (1, 2, 9)}  # (pair, person, column)
CUHK_TEST_PIDS = {3, 5, 6}  # 0-based global rows that are test identities


def cuhk_value(pair: int, person: int, column: int, labeled: bool) -> int:
    return (pair * 60 + person * 12 + column + (5 if labeled else 0)) % 256


def make_cuhk03_mat(path: Path) -> Path:
    """A MATLAB v7.3-style cuhk-03.mat: HDF5 cell arrays of object references, empty cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        count = 0

        def put(data: np.ndarray, empty: bool = False):
            nonlocal count
            count += 1
            ds = refs.create_dataset(f"r{count}", data=data)
            if empty:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        for im_type in ("labeled", "detected"):
            pair_refs = []
            for pair, rows in enumerate(CUHK_ROWS):
                cells = np.empty((10, rows), dtype=h5py.ref_dtype)
                for person in range(rows):
                    for column in range(10):
                        if im_type == "detected" and (pair, person, column) in DETECTED_EMPTY:
                            cells[column, person] = put(np.zeros(2, np.uint64), empty=True)
                        else:
                            value = cuhk_value(pair, person, column, im_type == "labeled")
                            pixels = np.full((6, 3, 3), value, np.uint8)  # H, W, C
                            cells[column, person] = put(pixels.transpose(2, 1, 0))  # MATLAB order
                pair_refs.append(refs.create_dataset(f"{im_type}{pair}", data=cells).ref)
            top = np.empty((1, len(CUHK_ROWS)), dtype=h5py.ref_dtype)
            top[0, :] = pair_refs
            f.create_dataset(im_type, data=top).attrs["MATLAB_class"] = np.bytes_(b"cell")
    return path


def cuhk_images(im_type: str) -> list[tuple[int, int, int]]:
    """(pair, person, column) of every non-empty image, pair by pair."""
    return [
        (pair, person, column)
        for pair, rows in enumerate(CUHK_ROWS)
        for person in range(rows)
        for column in range(10)
        if not (im_type == "detected" and (pair, person, column) in DETECTED_EMPTY)
    ]


def global_pid(pair: int, person: int) -> int:
    return sum(CUHK_ROWS[:pair]) + person


def cuhk_split(im_type: str) -> dict[str, list[tuple[int, int, int]]]:
    """The fake new protocol: the first image of each side is a query for test ids."""
    train, query, gallery = [], [], []
    for pair, person, column in cuhk_images(im_type):
        if global_pid(pair, person) not in CUHK_TEST_PIDS:
            train.append((pair, person, column))
        elif column in (0, 5):
            query.append((pair, person, column))
        else:
            gallery.append((pair, person, column))
    return {"train": train, "query": query, "gallery": gallery}


def protocol_name(pair: int, person: int, column: int) -> str:
    return f"{pair + 1}_{person + 1:03d}_{column // 5 + 1}_{column + 1:02d}.png"


def make_protocol_mat(path: Path, im_type: str) -> Path:
    """``cuhk03_new_protocol_config_<type>.mat`` (MATLAB v5) with 1-based indices into filelist."""
    images = cuhk_images(im_type)
    split = cuhk_split(im_type)
    position = {key: i + 1 for i, key in enumerate(images)}
    filelist = np.empty((len(images), 1), dtype=object)
    for i, key in enumerate(images):
        filelist[i, 0] = protocol_name(*key)
    column = lambda values: np.asarray(values, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    savemat(
        path,
        {
            "filelist": filelist,
            "labels": column([global_pid(p, q) + 1 for p, q, _ in images]),
            "camId": column([c // 5 + 1 for _, _, c in images]),
            "train_idx": column([position[k] for k in split["train"]]),
            "query_idx": column([position[k] for k in split["query"]]),
            "gallery_idx": column([position[k] for k in split["gallery"]]),
        },
    )
    return path


def original_name(pid: int, cam: int, idx: int) -> str:
    return f"{pid:08d}_{cam:04d}_{idx:08d}.jpg"


def split_pkl_names(im_type: str) -> dict[str, list[str]]:
    return {
        f"{key}_im_names": [original_name(global_pid(p, q), c // 5, c % 5) for p, q, c in keys]
        for key, keys in cuhk_split(im_type).items()
    }


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2.7's cPickle wrote: every str as a byte string (BINSTRING opcodes)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle_bytes(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # Python 2's numpy lived at numpy.core.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_py2_pickle(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle_bytes(obj))
    return path


def make_cuhk03_release(root: Path, protocol: str = "mat") -> Path:
    """``root/cuhk03_release/cuhk-03.mat`` plus the protocol files (``mat``, ``pkl`` or ``both``)."""
    make_cuhk03_mat(root / "cuhk03_release" / "cuhk-03.mat")
    if protocol in ("mat", "both"):
        for im_type in ("detected", "labeled"):
            make_protocol_mat(root / f"cuhk03_new_protocol_config_{im_type}.mat", im_type)
    if protocol in ("pkl", "both"):
        split = {t: {k: np.array(v, dtype="S") for k, v in split_pkl_names(t).items()} for t in ("detected", "labeled")}
        write_py2_pickle(root / "re_ranking_train_test_split.pkl", split)
    return root


MSMT_TRAIN = [(0, 1), (0, 2), (1, 3), (1, 3), (2, 1), (2, 15)]
MSMT_VAL = [(0, 4), (3, 2)]
MSMT_QUERY = [(0, 5), (1, 6)]
MSMT_GALLERY = [(0, 7), (0, 5), (1, 8), (2, 9)]


def msmt_name(pid: int, cam: int, k: int) -> str:
    return f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303morning_{k:04d}_0.jpg"


def make_msmt17(root: Path, version: str = "V1") -> Path:
    base = root / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    k = 0
    for list_name, spec, folder in (
        ("list_train.txt", MSMT_TRAIN, train_dir),
        ("list_val.txt", MSMT_VAL, train_dir),
        ("list_query.txt", MSMT_QUERY, test_dir),
        ("list_gallery.txt", MSMT_GALLERY, test_dir),
    ):
        lines = []
        for pid, cam in spec:
            k += 1
            rel = msmt_name(pid, cam, k)
            write_jpeg(base / folder / rel)
            lines.append(f"{rel} {pid}\n")
        (base / list_name).write_text("".join(lines))
    return base
