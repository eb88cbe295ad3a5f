"""The teacher's embeddings of the training images, computed once and kept beside the run.

Running the teacher on every batch would cost about as much as the student's own forward pass
(often more: the teacher is the bigger network); its embeddings of the un-augmented images do not
change during training, so they are computed once, with those of the mirrored images, and stored
in ``<cache dir>/teacher_<key>.npz``. The key is the sha256 of the teacher file's hash, its input
spec, and the sorted list of images with their sizes and modification times: a changed teacher,
spec or image set gives another key, and the old file is never read for it. The file also records
the key, which is checked on load. Writes are atomic, so an interrupted computation leaves no
half file. A resumed run, and any later run pointed at the same cache folder, reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
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
    key: str
    loaded: bool  # read from the cache (False: computed in this run)

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row of each of ``paths`` in :attr:`plain` / :attr:`flipped`."""
        where = {p: i for i, p in enumerate(self.paths)}
        return np.array([where[str(p)] for p in paths], dtype=np.int64)


def cache_key(teacher: Teacher, paths: Sequence[str]) -> str:
    """sha256 of the teacher's hash, its input spec and each image's path, size and modification time."""
    digest = hashlib.sha256(json.dumps({"teacher": teacher.sha256, "input": teacher.spec_text}).encode())
    for path in sorted(set(map(str, paths))):
        stat = os.stat(path)
        digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / f"teacher_{key[:24]}.npz"


def _read(path: Path, key: str) -> TeacherFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return TeacherFeatures([str(p) for p in data["paths"]], data["plain"], data["flipped"], key, True)
    except (OSError, KeyError, ValueError):  # missing, damaged or foreign: computed afresh
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


def teacher_features(teacher: Teacher, paths: Sequence[str], folder: str | Path) -> TeacherFeatures:
    """The teacher's embeddings of ``paths`` and their mirror images: from the cache in ``folder`` when
    its key matches, else computed and written there (atomically)."""
    ordered = sorted(set(map(str, paths)))
    key = cache_key(teacher, ordered)
    path = cache_path(folder, key)
    found = _read(path, key)
    if found is not None:
        print(f"Teacher features of {len(ordered)} images: reused {path}")
        return found
    start = time.time()
    plain, flipped = _embed(teacher, ordered)
    Path(folder).mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to a bare name
            np.savez(handle, key=np.array(key), paths=np.array(ordered), plain=plain, flipped=flipped,
                     teacher_sha256=np.array(teacher.sha256), teacher_input=np.array(teacher.spec_text))

    atomic_write(path, write, "teacher features cache")
    print(f"Teacher features of {len(ordered)} images (and their mirror images): {time.time() - start:.1f}s, "
          f"cached in {path}")
    return TeacherFeatures(ordered, plain, flipped, key, False)
