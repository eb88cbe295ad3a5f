"""Market-1501 layout reader (also DukeMTMC-reID, the ``folder`` layout and the synthetic world).

Names look like ``0002_c1s1_000451_03.jpg`` (Market) or ``0001_c2_f0046182.jpg`` (Duke):
identity, then ``c`` and the camera. Identity ``-1`` marks junk boxes, which the benchmark
excludes everywhere; ``0000`` marks distractors, which stay in the gallery as non-matches.
Only file names are read here, never pixels, so indexing is instant.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from bpm.data.datasets.common import IndexedDataset, list_image_names
from bpm.data.records import JUNK_PID, ImageRecord, TestSet
from bpm.errors import BpmError

# ASCII digits only: Python's \d also matches other scripts' digits ("٠٠٠٢"), which int() would
# silently read as numbers; a name in another script is not a Market name.
_NAME = re.compile(r"^(-?[0-9]+)_c([0-9]+)")


def checked_pid(pid: int, where: str) -> int:
    """Identities are >= 0 (0: distractor); -1 marks Market's junk boxes. Any other negative number
    (``-0007_c1...``) is a typo or another data set's convention, and is refused rather than guessed."""
    if pid < JUNK_PID:
        raise BpmError(f"{where}: identity {pid} is negative; expected a number >= 0, or -1 for a junk box")
    return pid


def parse_market_name(name: str) -> tuple[int, int]:
    """Return ``(pid, camid)`` from a Market/Duke-style file name."""
    match = _NAME.match(os.path.basename(name))
    if match is None:
        raise BpmError(f"{name}: expected a Market-style name like 0002_c1s1_000451_03.jpg (<pid>_c<cam>...)")
    return checked_pid(int(match.group(1)), name), int(match.group(2))


def read_split(folder: Path) -> tuple[list[ImageRecord], int]:
    """Records of one split folder with junk boxes dropped, and how many junk boxes there were."""
    records = []
    junk = 0
    prefix = os.path.join(str(folder), "")
    for name in list_image_names(folder):
        match = _NAME.match(name)
        if match is None:
            raise BpmError(f"{folder / name}: expected a Market-style name like 0002_c1s1_000451_03.jpg")
        pid = checked_pid(int(match.group(1)), str(folder / name))
        if pid == JUNK_PID:
            junk += 1
            continue
        records.append(ImageRecord(prefix + name, pid, int(match.group(2))))
    return records, junk


def multi_query_records(gt_bbox: list[ImageRecord], query: list[ImageRecord]) -> list[ImageRecord]:
    """``gt_bbox`` images whose (pid, cam) occurs among the queries: Market's multi-query set."""
    keys = {(r.pid, r.camid) for r in query}
    return [r for r in gt_bbox if (r.pid, r.camid) in keys]


def load_split_folders(root: Path, name: str, train: str, query: str, gallery: str, layout: str) -> IndexedDataset:
    """Read three Market-named folders (and ``gt_bbox`` when present) into one dataset.

    Training ids keep their original numbers; ``build_dataset`` relabels them. The training
    folder may be missing or empty: a test-only folder (a new camera network, a second
    benchmark) is evaluated with an empty training list, and only training refuses it.
    """
    root = Path(root)
    if not root.is_dir():
        raise BpmError(f"{root}: dataset folder not found (expected {name} in {layout} layout)")
    for sub in (query, gallery):
        if not (root / sub).is_dir():
            raise BpmError(f"{root / sub}: missing folder (expected {query}/ and {gallery}/, "
                           f"and {train}/ for training, in {root})")
    train_records: list[ImageRecord] = []
    junk_train = 0
    if (root / train).is_dir():
        train_records, junk_train = read_split(root / train)
    query_records, junk_query = read_split(root / query)
    gallery_records, junk_gallery = read_split(root / gallery)
    multi_query: list[ImageRecord] = []
    if (root / "gt_bbox").is_dir():
        multi_query = multi_query_records(read_split(root / "gt_bbox")[0], query_records)
    return IndexedDataset(
        name,
        train_records,
        [TestSet(name, query_records, gallery_records, multi_query)],
        layout=layout,
        root=str(root),
        num_junk=junk_train + junk_query + junk_gallery,
    )


def load_market_layout(root: Path, name: str) -> IndexedDataset:
    """Read a folder holding ``bounding_box_test`` and ``query`` (optionally ``bounding_box_train``, ``gt_bbox``)."""
    return load_split_folders(root, name, "bounding_box_train", "query", "bounding_box_test", "Market-1501 release")
