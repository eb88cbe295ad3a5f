"""Rank-list pictures: one JPEG per query, the original's layout pixel for pixel.

Layout (seed-facts, "Rank-list picture"): the query, then the top-k gallery images of its
ranking, every image resized to 128x64 (h x w); gallery tiles get a 3-px border drawn inside
the tile, green for the query's identity and red otherwise; tiles are separated by 8-px white
gaps in a single row, so k=10 gives a 784x128 picture. Gallery entries that the evaluation
protocol ignores (same identity seen by the same camera, junk id -1) are skipped, so the
picture shows exactly the ranking that CMC/mAP score.

Beside each rank list, a smaller "true matches" strip (:func:`draw_true_matches`) shows every
gallery image of the query's identity from another camera with its rank, so a match ranked 67th
is seen, not only counted. The rank-list JPEG itself keeps the original's geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from bpm.data.images import read_image
from bpm.data.records import JUNK_PID
from bpm.errors import BpmError

TILE_H, TILE_W = 128, 64
BORDER = 3
GAP = 8
MATCH_RGB = (0, 255, 0)
MISMATCH_RGB = (255, 0, 0)
GAP_RGB = (255, 255, 255)
QUERY_SEED = 1
MATCH_TILE_H, MATCH_TILE_W = TILE_H // 2, TILE_W // 2  # the true-matches strip: half-size tiles
CAPTION_H = 14
MAX_TRUE_MATCHES = 20


@dataclass(frozen=True)
class RankList:
    """The top of one query's ranking: gallery indices (best first) and whether each is a true match."""

    gallery_indices: np.ndarray
    matches: np.ndarray


def choose_queries(names: Sequence[str], num_queries: int, seed: int = QUERY_SEED) -> list[int]:
    """Indices (into ``names``) of the queries to draw, the same for every model.

    The choice depends only on the set of query names and the seed: names are sorted first,
    so neither the reader's order nor the features matter, and ``RandomState`` keeps its stream
    fixed across NumPy versions. The result is returned in name order for a readable index.
    """
    if num_queries < 1:
        raise BpmError(f"--num_queries: expected a positive number, got {num_queries}")
    by_name = sorted(range(len(names)), key=lambda i: (names[i], i))
    picked = np.random.RandomState(seed).permutation(len(names))[:num_queries]
    return sorted((by_name[p] for p in picked), key=lambda i: (names[i], i))


def rank_list(
    distances: np.ndarray, q_pid: int, q_camid: int, g_pids: np.ndarray, g_camids: np.ndarray, size: int
) -> RankList:
    """The ``size`` nearest valid gallery entries for one query (stable order on ties)."""
    order = np.argsort(np.asarray(distances), kind="stable")
    ignored = ((g_pids == q_pid) & (g_camids == q_camid)) | (g_pids == JUNK_PID)
    top = order[~ignored[order]][:size]
    return RankList(top, g_pids[top] == q_pid)


def true_matches(
    distances: np.ndarray, q_pid: int, q_camid: int, g_pids: np.ndarray, g_camids: np.ndarray
) -> list[tuple[int, int]]:
    """``(gallery index, rank)`` of every true match of one query, best first; ranks are 1-based
    among the valid gallery entries, as in :func:`rank_list` and the CMC."""
    order = np.argsort(np.asarray(distances), kind="stable")
    ignored = ((g_pids == q_pid) & (g_camids == q_camid)) | (g_pids == JUNK_PID)
    valid = order[~ignored[order]]
    return [(int(g), rank) for rank, g in enumerate(valid, start=1) if g_pids[g] == q_pid]


def draw_true_matches(paths: Sequence[str], ranks: Sequence[int], size: int) -> Image.Image:
    """A strip of half-size tiles, each a true match with its rank written under it; matches ranked
    within the top ``size`` (visible in the rank list) get a green border, the others red."""
    width = max(1, len(paths)) * (MATCH_TILE_W + GAP) - GAP
    canvas = Image.new("RGB", (max(width, MATCH_TILE_W), MATCH_TILE_H + CAPTION_H), GAP_RGB)
    draw = ImageDraw.Draw(canvas)
    for slot, (path, rank) in enumerate(zip(paths, ranks)):
        x = slot * (MATCH_TILE_W + GAP)
        tile = _tile(path, MATCH_RGB if rank <= size else MISMATCH_RGB, (MATCH_TILE_W, MATCH_TILE_H), 2)
        canvas.paste(Image.fromarray(tile), (x, 0))
        draw.text((x + 1, MATCH_TILE_H + 1), f"#{rank}", fill=(0, 0, 0))
    return canvas


def _tile(path: str, border_rgb: tuple[int, int, int] | None, size_w_h: tuple[int, int] = (TILE_W, TILE_H),
          border: int = BORDER) -> np.ndarray:
    image = read_image(path).resize(size_w_h, Image.BILINEAR)
    pixels = np.array(image, dtype=np.uint8)
    if border_rgb is not None:
        pixels[:border, :] = border_rgb
        pixels[-border:, :] = border_rgb
        pixels[:, :border] = border_rgb
        pixels[:, -border:] = border_rgb
    return pixels


def picture_width(size: int) -> int:
    """Width of a rank-list picture with ``size`` gallery tiles (784 for the default 10)."""
    return (size + 1) * TILE_W + size * GAP


def draw_rank_list(query_path: str, gallery_paths: Sequence[str], matches: Sequence[bool], size: int) -> Image.Image:
    """Compose one picture. Rows with fewer than ``size`` valid gallery entries keep the full
    width (the missing tiles stay white), so all pictures of a run line up in the index page."""
    canvas = np.full((TILE_H, picture_width(size), 3), GAP_RGB, dtype=np.uint8)
    canvas[:, :TILE_W] = _tile(query_path, None)
    for slot, (path, match) in enumerate(zip(gallery_paths, matches), start=1):
        x = slot * (TILE_W + GAP)
        canvas[:, x : x + TILE_W] = _tile(path, MATCH_RGB if match else MISMATCH_RGB)
    return Image.fromarray(canvas)


def picture_names(query_names: Sequence[str]) -> list[str]:
    """``<query name>.jpg`` per query; a repeated name (same file name in two folders) gets ``_2``, ``_3``..."""
    seen: dict[str, int] = {}
    out = []
    for name in query_names:
        stem = Path(name).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(f"{stem}.jpg" if seen[stem] == 1 else f"{stem}_{seen[stem]}.jpg")
    return out


def save_picture(image: Image.Image, path: Path) -> None:
    """JPEG without chroma subsampling: with the default 4:2:0 the 3-px colour borders bleed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95, subsampling=0)
