"""Pieces every dataset reader shares: the dataset record with layout facts, fast name listing,
relabelling, and one-time zip extraction.

Readers return training records with the dataset's *original* identity numbers;
:func:`bpm.data.datasets.build_dataset` relabels them at the very end, so the validation split
and ``--skip_bad_images`` can work on real ids first.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bpm.data.records import ImageRecord, ReidDataset
from bpm.errors import BpmError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class IndexedDataset(ReidDataset):
    """A :class:`ReidDataset` plus what ``bpm data check`` reports about how it was found.

    ``layout`` names the on-disk layout that was detected; ``num_junk`` counts boxes the
    benchmark excludes (Market's ``-1`` ids), which never reach any split.
    """

    layout: str = ""
    root: str = ""
    num_junk: int = 0


def list_image_names(folder: Path) -> list[str]:
    """Sorted image file names of ``folder`` (names only: ``os.listdir`` is the fastest way).

    Sorted so every run and every machine indexes the images in the same order.
    """
    if not folder.is_dir():
        raise BpmError(f"{folder}: expected a folder of images, but it does not exist")
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))


def relabel(records: list[ImageRecord]) -> list[ImageRecord]:
    """Map identities to contiguous labels 0..N-1 (sorted by original id), as the loss expects."""
    labels = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [ImageRecord(r.path, labels[r.pid], r.camid) for r in records]


def extract_zip_once(zip_path: Path) -> Path:
    """Extract ``zip_path`` beside itself once and return the extracted folder.

    Releases ship as zips with one top folder (``Market-1501-v15.09.15/``); that folder is what
    a user would get by unzipping by hand, so a later run finds it directly and never unzips
    again. Extraction goes to a hidden temporary folder that is renamed into place, so an
    interrupted run leaves no half-extracted dataset behind.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = [n for n in archive.namelist() if n and not n.startswith("__MACOSX")]
            tops = {n.split("/", 1)[0] for n in names}
            single_top = len(tops) == 1 and any("/" in n for n in names)
            target = zip_path.parent / (tops.pop() if single_top else zip_path.stem)
            if target.is_dir():
                return target
            tmp = Path(tempfile.mkdtemp(prefix=".bpm-unzip-", dir=zip_path.parent))
            try:
                archive.extractall(tmp, members=names)
                os.replace(tmp / target.name if single_top else tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise BpmError(f"{zip_path}: not a readable zip file ({exc})") from exc
    except PermissionError as exc:
        raise BpmError(f"{zip_path}: cannot extract beside the zip ({exc}); extract it by hand there") from exc
    return target


def find_release(root: Path, folder_names: tuple[str, ...], marker: str | tuple[str, ...], what: str) -> Path:
    """Locate a raw release inside ``root``: ``root`` itself, a known subfolder, or a known zip.

    ``marker`` is a file or folder that only the release has (``bounding_box_train``), or several
    such names, any one of which is enough (a test-only Market folder has ``bounding_box_test``
    but no ``bounding_box_train``). ``root`` may also be the zip itself.
    """
    markers = (marker,) if isinstance(marker, str) else tuple(marker)

    def holds_release(folder: Path) -> bool:
        return any((folder / m).exists() for m in markers)

    if root.is_file() and root.suffix.lower() == ".zip":
        root = extract_zip_once(root)
    if holds_release(root):
        return root
    for name in folder_names:
        if holds_release(root / name):
            return root / name
    for name in folder_names:
        archive = root / f"{name}.zip"
        if archive.is_file():
            extracted = extract_zip_once(archive)
            for candidate in (extracted, extracted / name):
                if holds_release(candidate):
                    return candidate
            raise BpmError(f"{archive}: expected the zip to hold {name}/{markers[0]}")
    if not root.exists():
        raise BpmError(f"{root}: dataset folder not found (expected {what})")
    expected = ", ".join(list(markers) + [f"{n}/" for n in folder_names] + [f"{n}.zip" for n in folder_names])
    raise BpmError(f"{root}: no {what} found; expected one of {expected} (or images/ + partitions.pkl)")
