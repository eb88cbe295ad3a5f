"""The teacher's embeddings of the training images, computed once and kept beside the run.

Running the teacher on every batch would cost about as much as the student's own forward pass
(often more: the teacher is the bigger network); its embeddings of the un-augmented images do not
change during training, so they are computed once, with those of the mirrored images, and stored
in ``<cache dir>/teacher_<key>.npz``, one file per teacher. The key is the sha256 of the teacher
file's hash and its input spec: another teacher or spec gets another file, which records both and is
checked on load. Inside it every image is keyed by its path, size and modification time, so a run on
another image set (a ``--distill_extra`` folder added, a split changed) computes only the images the
file lacks, and an image changed on disk is computed again. Writes are atomic, so an interrupted
computation leaves no half file. A resumed run, and any later run pointed at the same cache folder,
reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import ImageOps
from tqdm import tqdm

from bpm.data.images import read_image
from bpm.distill.teacher import Teacher
from bpm.files import atomic_write

BATCH = 64


@dataclass
class TeacherFeatures:
    """Embeddings of ``paths`` (sorted) and of their mirror images, as the teacher returned them."""

    paths: list[str]
    plain: np.ndarray
    flipped: np.ndarray
    key: str  # the teacher's key (see teacher_key)
    computed: int  # images the teacher ran on in this call (0: all read from the cache)

    @property
    def loaded(self) -> bool:
        return self.computed == 0

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row of each of ``paths`` in :attr:`plain` / :attr:`flipped`."""
        where = {p: i for i, p in enumerate(self.paths)}
        return np.array([where[str(p)] for p in paths], dtype=np.int64)


def teacher_key(teacher: Teacher) -> str:
    """sha256 of the teacher file's hash and its input spec: what names its cache file."""
    return hashlib.sha256(json.dumps({"teacher": teacher.sha256, "input": teacher.spec_text}).encode()).hexdigest()


def image_key(path: str) -> str:
    """An image's path, size and modification time: a file changed on disk gets another key."""
    stat = os.stat(path)
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"


def cache_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / f"teacher_{key[:24]}.npz"


@dataclass
class _Stored:
    image_keys: list[str]
    plain: np.ndarray
    flipped: np.ndarray


def _read(path: Path, key: str) -> _Stored | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return _Stored([str(k) for k in data["image_keys"]], data["plain"], data["flipped"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):  # missing, damaged, foreign or an older layout: computed afresh
        return None


def _embed(teacher: Teacher, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    plain, flipped = [], []
    show = sys.stdout.isatty()
    for start in tqdm(range(0, len(paths), BATCH), desc="teacher", disable=not show, leave=False):
        images = [read_image(p) for p in paths[start:start + BATCH]]
        plain.append(teacher.embed_images(images))
        flipped.append(teacher.embed_images([ImageOps.mirror(im) for im in images]))
    empty = np.zeros((0, teacher.dim), np.float32)
    return (np.concatenate(plain) if plain else empty), (np.concatenate(flipped) if flipped else empty)


def _write(path: Path, key: str, teacher: Teacher, stored: _Stored) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to a bare name
            np.savez(handle, key=np.array(key), image_keys=np.array(stored.image_keys), plain=stored.plain,
                     flipped=stored.flipped, teacher_sha256=np.array(teacher.sha256),
                     teacher_input=np.array(teacher.spec_text))

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, "teacher features cache")


def _merge(old: _Stored | None, keys: list[str], plain: np.ndarray, flipped: np.ndarray) -> _Stored:
    """``old`` plus the new rows, less the old rows of any path whose image changed since."""
    if old is None:
        return _Stored(keys, plain, flipped)
    replaced = {k.split("\0", 1)[0] for k in keys}
    keep = [i for i, k in enumerate(old.image_keys) if k.split("\0", 1)[0] not in replaced]
    return _Stored([old.image_keys[i] for i in keep] + keys, np.concatenate([old.plain[keep], plain]),
                   np.concatenate([old.flipped[keep], flipped]))


def teacher_features(teacher: Teacher, paths: Sequence[str], folder: str | Path) -> TeacherFeatures:
    """The teacher's embeddings of ``paths`` and their mirror images: read from the teacher's cache
    file in ``folder`` where it holds an image as it is on disk now; the rest computed and added to
    the file (atomically)."""
    ordered = sorted(set(map(str, paths)))
    key = teacher_key(teacher)
    path = cache_path(folder, key)
    stored = _read(path, key)
    keys = [image_key(p) for p in ordered]
    where = {k: i for i, k in enumerate(stored.image_keys)} if stored else {}
    missing = [i for i, k in enumerate(keys) if k not in where]
    start = time.time()
    if missing or stored is None:
        new_plain, new_flipped = _embed(teacher, [ordered[i] for i in missing])
        stored = _merge(stored, [keys[i] for i in missing], new_plain, new_flipped)
        _write(path, key, teacher, stored)
        where = {k: i for i, k in enumerate(stored.image_keys)}
    rows = np.array([where[k] for k in keys], dtype=np.int64)
    features = TeacherFeatures(ordered, stored.plain[rows], stored.flipped[rows], key, len(missing))
    reused = len(ordered) - len(missing)
    if missing:
        print(f"Teacher features of {len(ordered)} images: {len(missing)} computed (with their mirror images) "
              f"in {time.time() - start:.1f}s, {reused} reused; cached in {path}")
    else:
        print(f"Teacher features of {len(ordered)} images: reused {path}")
    return features
