"""CUHK03 from its release: ``cuhk03_release/cuhk-03.mat`` plus the new (767/700) protocol.

``cuhk-03.mat`` is a MATLAB v7.3 file (HDF5): cell arrays ``labeled`` and ``detected`` hold one
cell per camera pair (5 pairs); each is an (ids x 10) array of references to images, columns
0-4 from the pair's camera A and 5-9 from camera B; empty references mean "no image".

Images live inside the .mat, but every consumer wants files, so on first use the images of the
requested type are written once to ``cuhk03_release/bpm_images_<type>/`` (a temporary folder
renamed into place, so an interrupted run leaves nothing half-done). Their names are those of the
protocol's ``filelist``: ``<pair>_<person:03d>_<cam 1|2>_<column 01-10>.png``. After that,
indexing reads names only.

Camera ids are ``2*pair + side + 1`` (1..10): distinct across pairs, so the same-camera rule never
confuses camera A of one pair with camera A of another.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bpm.data.datasets.common import IndexedDataset, find_release
from bpm.data.partitions import load_train_test_split
from bpm.data.records import ImageRecord, TestSet
from bpm.errors import BpmError

COLUMNS_PER_SIDE = 5
IM_TYPES = ("detected", "labeled")
_CACHE_NAME = re.compile(r"^(\d+)_(\d{3})_([12])_(\d{2})\.png$", re.ASCII)
_SPLIT_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)\.\w+$", re.ASCII)
_ROWS_FILE = "rows.json"


def cuhk03_camera(pair: int, side: int) -> int:
    """Camera id of side ``side`` (0 = A, 1 = B) of 0-based camera pair ``pair``."""
    return 2 * pair + side + 1


def cache_name(pair: int, person: int, column: int) -> str:
    """Protocol file name of 0-based ``pair``, ``person`` (row in the pair) and ``column`` (0-9)."""
    return f"{pair + 1}_{person + 1:03d}_{column // COLUMNS_PER_SIDE + 1}_{column + 1:02d}.png"


def parse_cache_name(name: str, where: str) -> tuple[int, int, int]:
    """0-based ``(pair, person, column)`` of a protocol file name such as ``1_001_1_01.png``."""
    match = _CACHE_NAME.match(name)
    if match is None:
        raise BpmError(f"{where}: image name {name!r} is not of the form 1_001_1_01.png")
    pair, person, cam, col = (int(g) for g in match.groups())
    if (col - 1) // COLUMNS_PER_SIDE != cam - 1:
        raise BpmError(f"{where}: image name {name!r} has column {col} but camera {cam} (columns 1-5 are camera 1)")
    return pair - 1, person - 1, col - 1


def _is_image(dataset) -> bool:
    """MATLAB writes empty cells as a 2-element shape vector flagged ``MATLAB_empty``."""
    return dataset.ndim == 3 and dataset.size > 0 and not dataset.attrs.get("MATLAB_empty", 0)


def _write_images(mat_path: Path, im_type: str, out_dir: Path) -> list[int]:
    """Write every image of ``im_type`` as PNG into ``out_dir``; return the row count of each pair."""
    import h5py
    from PIL import Image

    rows = []
    try:
        with h5py.File(mat_path, "r") as mat:
            if im_type not in mat:
                raise BpmError(f"{mat_path}: expected a '{im_type}' cell array (is this cuhk-03.mat?)")
            for pair, pair_ref in enumerate(np.asarray(mat[im_type]).ravel()):
                refs = np.asarray(mat[pair_ref]).T  # MATLAB is column-major: (10, ids) on disk
                if refs.ndim != 2 or refs.shape[1] != 2 * COLUMNS_PER_SIDE:
                    raise BpmError(f"{mat_path}: {im_type} pair {pair + 1} is {refs.shape}, expected (ids, 10)")
                rows.append(int(refs.shape[0]))
                for person in range(refs.shape[0]):
                    for column in range(refs.shape[1]):
                        ref = refs[person, column]
                        if not ref:
                            continue
                        dataset = mat[ref]
                        if not _is_image(dataset):
                            continue
                        pixels = np.ascontiguousarray(np.asarray(dataset).transpose(2, 1, 0))
                        Image.fromarray(pixels).save(out_dir / cache_name(pair, person, column), compress_level=1)
    except OSError as exc:
        raise BpmError(f"{mat_path}: cannot read as a MATLAB v7.3 (HDF5) file ({exc})") from exc
    return rows


def ensure_images(mat_path: Path, im_type: str) -> tuple[Path, list[int]]:
    """The folder of extracted ``im_type`` images (extracting once) and each pair's row count."""
    cache = mat_path.parent / f"bpm_images_{im_type}"
    if not (cache / _ROWS_FILE).is_file():
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".bpm_images_{im_type}.", dir=mat_path.parent))
        except PermissionError as exc:
            raise BpmError(f"{mat_path.parent}: cannot write the extracted CUHK03 images there ({exc})") from exc
        try:
            rows = _write_images(mat_path, im_type, tmp)
            (tmp / _ROWS_FILE).write_text(json.dumps({"rows": rows}))
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache, json.loads((cache / _ROWS_FILE).read_text())["rows"]


def _cell_strings(value) -> list[str]:
    """Strings of a MATLAB cell array as ``scipy.io.loadmat`` returns it (nested object arrays)."""
    return [str(np.asarray(item).ravel()[0]) for item in np.asarray(value).ravel()]


def records_from_protocol_mat(cfg: Path, cache: Path, present: set[str]) -> tuple[list[ImageRecord], ...]:
    from scipy.io import loadmat

    try:
        data = loadmat(cfg)
        names = _cell_strings(data["filelist"])
        labels = np.asarray(data["labels"]).ravel().astype(int)
        splits = [np.asarray(data[k]).ravel().astype(int) for k in ("train_idx", "query_idx", "gallery_idx")]
    except (KeyError, ValueError, OSError, IndexError) as exc:
        raise BpmError(
            f"{cfg}: expected a MATLAB file with train_idx, query_idx, gallery_idx, labels, filelist ({exc})"
        ) from exc
    out = []
    for idx in splits:
        if idx.size and (idx.min() < 1 or idx.max() > len(names)):
            raise BpmError(f"{cfg}: indices must be 1-based positions in filelist (1..{len(names)})")
        records = []
        for i in idx:
            name = names[i - 1]
            if name not in present:
                raise BpmError(f"{cfg}: names image {name} that is not in {cache}")
            pair, _, column = parse_cache_name(name, str(cfg))
            camid = cuhk03_camera(pair, column // COLUMNS_PER_SIDE)
            records.append(ImageRecord(os.path.join(str(cache), name), int(labels[i - 1]), camid))
        out.append(records)
    return tuple(out)


def split_name_to_cache(name: str, offsets: list[int], where: str) -> tuple[str, int, int]:
    """Map a converted name of the original (``{pid:08d}_{side:04d}_{idx:08d}.jpg``) to its image.

    The original numbered persons pair after pair and counted each side's images from 0, so
    the pid gives pair and row, and side and index give the column. Returns
    ``(cache name, pid, camid)``.
    """
    match = _SPLIT_NAME.match(name)
    if match is None:
        raise BpmError(f"{where}: image name {name!r} is not of the form 00000002_0001_00000000.jpg")
    pid, side, idx = (int(g) for g in match.groups())
    if side > 1 or idx >= COLUMNS_PER_SIDE or pid >= offsets[-1]:
        raise BpmError(f"{where}: image name {name!r} is out of range for this cuhk-03.mat")
    pair = int(np.searchsorted(offsets, pid, side="right")) - 1
    column = side * COLUMNS_PER_SIDE + idx
    return cache_name(pair, pid - offsets[pair], column), pid, cuhk03_camera(pair, side)


def records_from_split_pkl(pkl: Path, im_type: str, cache: Path, present: set[str], rows: list[int]) -> tuple:
    offsets = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()
    split = load_train_test_split(pkl, im_type)
    out = []
    for key in ("train_im_names", "query_im_names", "gallery_im_names"):
        records = []
        for name in split[key]:
            file, pid, camid = split_name_to_cache(name, offsets, f"{pkl}[{im_type!r}][{key!r}]")
            if file not in present:
                raise BpmError(f"{pkl}: {key} names image {name} that is not in {mat_hint(cache)}")
            records.append(ImageRecord(os.path.join(str(cache), file), pid, camid))
        out.append(records)
    return tuple(out)


def mat_hint(cache: Path) -> str:
    return str(cache.parent / "cuhk-03.mat")


def find_mat(root: Path) -> Path:
    release = find_release(root, ("cuhk03_release",), "cuhk-03.mat", "CUHK03 release (cuhk03_release/cuhk-03.mat)")
    return release / "cuhk-03.mat"


def load_cuhk03(root: Path, im_type: str) -> IndexedDataset:
    """Read the raw release with the new protocol from ``.mat`` config (preferred) or the ``.pkl``."""
    mat = find_mat(root)
    places = [root] if root.is_dir() else []
    places += [mat.parent, mat.parent.parent]
    configs = [p / f"cuhk03_new_protocol_config_{im_type}.mat" for p in places]
    pickles = [p / "re_ranking_train_test_split.pkl" for p in places]
    config = next((p for p in configs if p.is_file()), None)
    pickle_file = next((p for p in pickles if p.is_file()), None)
    if config is None and pickle_file is None:
        raise BpmError(
            f"{root}: CUHK03 needs the new-protocol split: cuhk03_new_protocol_config_{im_type}.mat "
            "or re_ranking_train_test_split.pkl beside cuhk03_release/"
        )
    cache, rows = ensure_images(mat, im_type)
    present = set(os.listdir(cache))
    if config is not None:
        train, query, gallery = records_from_protocol_mat(config, cache, present)
        layout = f"CUHK03 release ({im_type}) + {config.name}"
    else:
        train, query, gallery = records_from_split_pkl(pickle_file, im_type, cache, present, rows)
        layout = f"CUHK03 release ({im_type}) + {pickle_file.name}"
    return IndexedDataset("cuhk03", train, [TestSet("cuhk03", query, gallery)], layout=layout, root=str(root))
