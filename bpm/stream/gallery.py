"""Identities across cameras and time: each a quality-weighted mean embedding, matched by cosine distance.

A track contributes its embeddings, each weighted by :func:`quality` (detector score times how
much of a full-size person the crop holds), so blurred, tiny or doubtful crops count less. A new
track joins the nearest identity whose cosine distance (``1 - cos``) is below ``threshold``,
otherwise it founds a new identity. ``DEFAULT_THRESHOLD`` was chosen with ``bpm stream
--calibrate`` on the synthetic multi-camera sequences (docs/guide/stream.md tells how to pick
it for a camera network from labelled footage).

The gallery is saved as an ``.npz`` of plain arrays (no pickle) and can be reloaded, so a
later run recognises people seen before; enrolled identities (a folder of crops per named person)
carry their name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bpm.errors import BpmError

DEFAULT_THRESHOLD = 0.3
FULL_HEIGHT = 128.0  # crop height (pixels) at which a crop counts fully; re-ID inputs are this size or less


def quality(score: float, box: np.ndarray) -> float:
    """A crop's weight in its track's mean: detector score times min(1, height / FULL_HEIGHT)."""
    return float(max(score, 1e-3) * min(1.0, max(float(box[3] - box[1]), 1.0) / FULL_HEIGHT))


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


@dataclass
class Identity:
    id: int
    name: str = ""                   # enrolled people have one
    total: np.ndarray | None = None  # sum of weight * unit embedding
    weight: float = 0.0
    enrolled: bool = False
    cameras: set[str] = field(default_factory=set)

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.total is None or self.weight <= 0 else unit(self.total / self.weight)

    def add(self, embedding_sum: np.ndarray, weight: float) -> None:
        """Add a track's weighted embedding sum (its mean times its weight)."""
        if weight <= 0:
            return
        self.total = embedding_sum.astype(np.float32).copy() if self.total is None else self.total + embedding_sum
        self.weight += weight


class Gallery:
    """The identities known so far; ``match`` finds the nearest one under the threshold."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold < 2.0:
            raise BpmError(f"--threshold: expected a cosine distance in (0, 2), got {threshold}")
        self.threshold = threshold
        self.identities: dict[int, Identity] = {}

    def new_identity(self, name: str = "", enrolled: bool = False) -> Identity:
        identity = Identity(max(self.identities, default=0) + 1, name, enrolled=enrolled)
        self.identities[identity.id] = identity
        return identity

    def match(self, embedding: np.ndarray, exclude: set[int] = frozenset()) -> tuple[Identity | None, float]:
        """Nearest identity not in ``exclude`` and its cosine distance; ``None`` when none is under the threshold."""
        candidates = [i for i in self.identities.values() if i.id not in exclude and i.embedding is not None]
        if not candidates:
            return None, float("inf")
        matrix = np.stack([i.embedding for i in candidates])
        distances = 1.0 - matrix @ unit(embedding)
        best = int(np.argmin(distances))
        distance = float(distances[best])
        return (candidates[best] if distance < self.threshold else None), distance

    def enroll(self, name: str, embeddings: np.ndarray) -> Identity:
        """A named person from a few crops' embeddings (each weighing 1)."""
        identity = self.new_identity(name, enrolled=True)
        units = np.stack([unit(e) for e in embeddings])
        identity.add(units.sum(axis=0), float(len(units)))
        return identity

    def save(self, path: str | Path) -> None:
        """Atomic ``.npz``: ids, names, enrolled flags, weighted sums and weights."""
        path = Path(path)
        kept = [i for i in self.identities.values() if i.total is not None]
        dim = kept[0].total.shape[0] if kept else 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, ids=np.array([i.id for i in kept], np.int64), names=np.array([i.name for i in kept], dtype=str),
                 enrolled=np.array([i.enrolled for i in kept], bool), weights=np.array([i.weight for i in kept], np.float64),
                 totals=np.stack([i.total for i in kept]).astype(np.float32) if kept else np.zeros((0, dim), np.float32),
                 threshold=np.float64(self.threshold))
        os.replace(tmp, path)

    def load(self, path: str | Path, feature_dim: int) -> None:
        """Add the identities saved in ``path``; their dimension must be the model's."""
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, names, enrolled = data["ids"], data["names"], data["enrolled"]
                weights, totals = data["weights"], data["totals"]
        except (OSError, KeyError, ValueError) as exc:
            raise BpmError(f"--gallery {path}: not a gallery saved by bpm stream ({exc})") from exc
        if len(ids) and totals.shape[1] != feature_dim:
            raise BpmError(f"--gallery {path}: embeddings of dimension {totals.shape[1]}, but the re-ID model gives {feature_dim}")
        for i, name, flag, weight, total in zip(ids, names, enrolled, weights, totals):
            self.identities[int(i)] = Identity(int(i), str(name), total.astype(np.float32), float(weight), bool(flag))


def enroll_folder(gallery: Gallery, folder: Path, embed: Callable[[list[np.ndarray]], np.ndarray]) -> None:
    """Enroll every ``<name>/`` sub-folder of ``folder`` (crops of one person) as a named identity.

    Args:
        gallery: the gallery the identities join.
        folder: one sub-folder of RGB-decodable crops per person (``--enroll``).
        embed: RGB ``HxWx3`` uint8 crops -> ``[N, D]`` embeddings (the stream's re-ID model).
    """
    import cv2  # the stream extra; imported here so that reading a saved gallery does not need it

    from bpm.stream.sources import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise BpmError(f"--enroll: {folder} is not a folder (expected one sub-folder of crops per person)")
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = [cv2.imread(str(f)) for f in sorted(person.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        images = [np.ascontiguousarray(i[:, :, ::-1]) for i in images if i is not None]
        if images:
            gallery.enroll(person.name, embed(images))
    if not gallery.identities:
        raise BpmError(f"--enroll: {folder} has no <name>/ sub-folder with images")
