"""Rank-list pages of test sets: the chosen queries' rank lists and true matches, and an ``index.html``.

``bpm visualize``'s work. Features come from a features file (:func:`load_feature_sets`) or from a
model (the command wires lazy extraction into :class:`VisSet`); the same queries are drawn for every
model (:func:`bpm.vis.rank_list.choose_queries`), and the page lists each with its AP and first-match
rank from the evaluation engine.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from bpm.data.records import ImageRecord, id_arrays
from bpm.errors import BpmError
from bpm.evaluation import compute_distances, evaluate, re_ranking
from bpm.evaluation.features_file import read_test_sets
from bpm.vis.html import PageEntry, render_index, write_page
from bpm.vis.rank_list import (MAX_TRUE_MATCHES, choose_queries, draw_rank_list, draw_true_matches, picture_names,
                               rank_list, save_picture, true_matches)

MATCHES_DIR = "true_matches"


@dataclass
class VisSet:
    """One test set to draw: its records and how to get features for a subset of queries / the gallery.

    Extracting only the drawn queries (16 of Market's 3,368) is what makes the visualiser quick;
    re-ranking needs every query, so it asks for all of them.
    """

    name: str
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    query_names: list[str]
    query_features: Callable[[list[int]], np.ndarray]
    gallery_features: Callable[[], np.ndarray]


def load_feature_sets(path: str | Path, normalize: bool) -> list[VisSet]:
    """Every test set of a features file (:func:`bpm.evaluation.features_file.read_test_sets`) to draw."""
    return [VisSet(s.name, s.query, s.gallery, s.query_names,
                   lambda rows, q=s.query_features: q[rows], lambda g=s.gallery_features: g)
            for s in read_test_sets(path, normalize)]


def check_set(vis: VisSet, size: int) -> None:
    """Refuse, in one line, a test set that cannot give ``size``-long rank lists (before anything is drawn)."""
    if not vis.gallery:
        raise BpmError(f"test set {vis.name}: the gallery is empty; nothing to rank")
    if not vis.query:
        raise BpmError(f"test set {vis.name}: there are no query images")
    if size > len(vis.gallery):
        raise BpmError(f"--rank_list_size {size} is larger than the gallery of test set {vis.name} "
                       f"({len(vis.gallery)} images)")


def _distances(vis: VisSet, chosen: list[int], rerank: bool) -> np.ndarray:
    g_feat = vis.gallery_features()
    if not rerank:
        return compute_distances(vis.query_features(chosen), g_feat)
    q_feat = vis.query_features(list(range(len(vis.query))))
    q_g = compute_distances(q_feat, g_feat)
    return re_ranking(q_g, compute_distances(q_feat, q_feat), compute_distances(g_feat, g_feat))[chosen]


def _scores(dist: np.ndarray, query: list[ImageRecord], gallery: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and first-match rank from the evaluation engine; NaN / -1 for queries without a true match."""
    q_pids, q_cams = id_arrays(query)
    g_pids, g_cams = id_arrays(gallery)
    valid = np.array([bool(((g_pids == p) & (g_cams != c)).any()) for p, c in zip(q_pids, q_cams)], dtype=bool)
    ap = np.full(len(query), np.nan)
    first = np.full(len(query), -1, dtype=np.int64)
    if valid.any():
        result = evaluate(dist[valid], q_pids[valid], g_pids, q_cams[valid], g_cams, max_rank=1)
        ap[valid] = result["ap"]
        first[valid] = result["first_match_rank"]
    return ap, first


def draw_set(vis: VisSet, out_dir: Path, num_queries: int, size: int, rerank: bool, seed: int,
             source: str) -> list[PageEntry]:
    """Draw the chosen queries of one test set into ``out_dir`` and write its ``index.html``."""
    chosen = choose_queries(vis.query_names, num_queries, seed)
    dist = _distances(vis, chosen, rerank)
    query = [vis.query[i] for i in chosen]
    ap, first = _scores(dist, query, vis.gallery)
    g_pids, g_cams = id_arrays(vis.gallery)
    pictures = picture_names([vis.query_names[i] for i in chosen])
    entries = []
    progress = tqdm(range(len(chosen)), desc=f"rank lists {vis.name}", disable=not sys.stdout.isatty(), leave=False)
    for row in progress:
        ranked = rank_list(dist[row], query[row].pid, query[row].camid, g_pids, g_cams, size)
        image = draw_rank_list(query[row].path, [vis.gallery[i].path for i in ranked.gallery_indices],
                               ranked.matches.tolist(), size)
        save_picture(image, out_dir / pictures[row])
        found = true_matches(dist[row], query[row].pid, query[row].camid, g_pids, g_cams)
        shown = found[:MAX_TRUE_MATCHES]
        strip = ""
        if shown:
            strip = f"{MATCHES_DIR}/{Path(pictures[row]).stem}.jpg"  # beside, so rank lists stay the only *.jpg
            save_picture(draw_true_matches([vis.gallery[g].path for g, _ in shown], [r for _, r in shown], size),
                         out_dir / strip)
        entries.append(PageEntry(pictures[row], vis.query_names[chosen[row]], float(ap[row]), int(first[row]),
                                 strip, tuple(r for _, r in shown), len(found)))
    notes = [f"Features: {source}.",
             f"{len(chosen)} of {len(vis.query)} queries (seed {seed}), top {size} of {len(vis.gallery)} gallery images, "
             f"{'k-reciprocal re-ranked' if rerank else 'Euclidean'} distances; same-identity same-camera and junk "
             "gallery entries skipped, as in the evaluation."]
    write_page(out_dir / "index.html", render_index(f"Rank lists: {vis.name}", entries, notes))
    return entries
