"""``bpm visualize`` / ``script/experiment/visualize_rank_list.py`` / ``vis_res.sh``: rank-list pictures.

Features come either from a model (weights file or checkpoint, extracted under the precision
policy of ``--opt-level``) or from a features file (``bpm test --save_features``, ``bpm extract``). The
same queries are drawn for every model (see :func:`bpm.vis.rank_list.choose_queries`), and an
``index.html`` beside the JPEGs lists each with its AP and first-match rank.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from bpm.config import (DataSettings, FeatureSettings, ModelSettings, PrecisionSettings, add_dataset_features_switches,
                        add_output_switches, add_rerank_switch, add_weights_switches, data_settings, default_exp_dir,
                        feature_settings, model_settings, precision_settings)
from bpm.data.records import ImageRecord, TestSet
from bpm.errors import BpmError
from bpm.vis.html import PageEntry, render_index, render_links, write_page
from bpm.vis.rank_list import (MAX_TRUE_MATCHES, QUERY_SEED, choose_queries, draw_rank_list, draw_true_matches,
                               picture_names, rank_list, save_picture, true_matches)

RANK_LISTS = "rank_lists"
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_features_switches(parser)
    add_output_switches(parser, run_number=False)
    add_weights_switches(parser, checkpoint=True)
    parser.add_argument("--num_queries", type=int, default=16, help="how many queries to draw")
    parser.add_argument("--rank_list_size", type=int, default=10, help="gallery images per rank list")
    add_rerank_switch(parser, default=False, help="rank by k-reciprocal re-ranked distances")
    parser.add_argument("--features_file", default="",
                        help="HDF5 features saved by `bpm test --save_features` (instead of a model and dataset)")
    parser.add_argument("--query_seed", type=int, default=QUERY_SEED,
                        help="seed of the query choice; keep it to compare models on the same queries")


def _check_args(args: argparse.Namespace) -> None:
    if args.num_queries < 1:
        raise BpmError(f"--num_queries: expected a positive number, got {args.num_queries}")
    if args.rank_list_size < 1:
        raise BpmError(f"--rank_list_size: expected a positive number, got {args.rank_list_size}")
    if args.features_file and (args.model_weight_file or args.ckpt_file):
        raise BpmError("--features_file replaces the model: give it or --model_weight_file/--ckpt_file, not both")
    from bpm.switches import check_common

    check_common(vars(args))  # --resize_h_w, --workers, --batch_size_test
    # Inputs are checked before anything slow (imports, dataset indexing, the model) starts.
    if args.features_file and not Path(args.features_file).is_file():
        raise BpmError(f"--features_file {args.features_file}: file not found")
    if args.data_root and not args.features_file and not Path(args.data_root).exists():
        raise BpmError(f"--data_root {args.data_root}: folder not found")


def _exp_dir(args: argparse.Namespace) -> Path:
    if args.exp_dir:
        return Path(args.exp_dir)
    return default_exp_dir(args.dataset, args.net, args.opt_level, args.last_conv_stride)


def _weights_path(args: argparse.Namespace, exp_dir: Path) -> str:
    return args.model_weight_file or args.ckpt_file or str(exp_dir / "ckpt.pth")


def load_feature_sets(path: str | Path, normalize: bool) -> list[VisSet]:
    """Every test set of a features file (:func:`bpm.evaluation.features_file.read_test_sets`) to draw."""
    from bpm.evaluation.features_file import read_test_sets

    return [VisSet(s.name, s.query, s.gallery, s.query_names,
                   lambda rows, q=s.query_features: q[rows], lambda g=s.gallery_features: g)
            for s in read_test_sets(path, normalize)]


def _model_sets(weights: str, devices: tuple[int, ...], model_settings: ModelSettings, data: DataSettings,
                precision: PrecisionSettings, features: FeatureSettings) -> tuple[list[VisSet], str]:
    """Load the model (failing fast on a wrong weights file), index the dataset, and wire lazy extraction."""
    from bpm.evaluation.features import extract_features
    from bpm.models.loading import load_model
    from bpm.precision import resolve_device

    policy = precision.policy(resolve_device(devices))
    bare, spec = load_model(weights, **model_settings.overrides())
    normalize = bool(features.normalize) or spec.normalize_features  # the model's test-time normalisation, as bpm test
    model = policy.prepare_model(bare)
    dataset = data.build(require_train=False)  # only query/gallery are drawn: a test-only folder works

    def extractor(records: list[ImageRecord], desc: str) -> np.ndarray:
        return extract_features(model, records, policy, spec, features.batch_size,
                                features.workers, features.flip, normalize, desc)

    def vis_set(ts: TestSet) -> VisSet:
        return VisSet(ts.name, ts.query, ts.gallery, [Path(r.path).name for r in ts.query],
                      lambda rows: extractor([ts.query[i] for i in rows], "query"),
                      lambda: extractor(ts.gallery, "gallery"))

    source = f"model {bare.net} from {weights}, precision {policy.describe()}"
    return [vis_set(ts) for ts in dataset.test_sets], source


def _check_set(vis: VisSet, size: int) -> None:
    if not vis.gallery:
        raise BpmError(f"test set {vis.name}: the gallery is empty; nothing to rank")
    if not vis.query:
        raise BpmError(f"test set {vis.name}: there are no query images")
    if size > len(vis.gallery):
        raise BpmError(f"--rank_list_size {size} is larger than the gallery of test set {vis.name} "
                       f"({len(vis.gallery)} images)")


def _distances(vis: VisSet, chosen: list[int], rerank: bool) -> np.ndarray:
    from bpm.evaluation import compute_distances, re_ranking

    g_feat = vis.gallery_features()
    if not rerank:
        return compute_distances(vis.query_features(chosen), g_feat)
    q_feat = vis.query_features(list(range(len(vis.query))))
    q_g = compute_distances(q_feat, g_feat)
    return re_ranking(q_g, compute_distances(q_feat, q_feat), compute_distances(g_feat, g_feat))[chosen]


def _ids(records: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.pid for r in records], dtype=np.int64), np.array([r.camid for r in records], dtype=np.int64)


def _scores(dist: np.ndarray, query: list[ImageRecord], gallery: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and first-match rank from the evaluation engine; NaN / -1 for queries without a true match."""
    from bpm.evaluation import evaluate

    q_pids, q_cams = _ids(query)
    g_pids, g_cams = _ids(gallery)
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
    g_pids, g_cams = _ids(vis.gallery)
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


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    exp_dir = _exp_dir(args)
    if not args.features_file and not Path(_weights_path(args, exp_dir)).exists():
        raise BpmError(f"{_weights_path(args, exp_dir)}: weights file not found")  # before any slow step
    if args.features_file:
        sets = load_feature_sets(args.features_file, args.normalize_feature)
        source = f"{args.features_file}{' (L2-normalised)' if args.normalize_feature else ''}"
    else:
        sets, source = _model_sets(_weights_path(args, exp_dir), tuple(args.sys_device_ids), model_settings(args),
                                   data_settings(args), precision_settings(args), feature_settings(args))
    for vis in sets:
        _check_set(vis, args.rank_list_size)
    exp_dir.mkdir(parents=True, exist_ok=True)
    from bpm.engine.logging import StreamMirror

    with StreamMirror(exp_dir, enabled=args.log_to_file):
        root = exp_dir / RANK_LISTS
        many = len(sets) > 1
        for vis in sets:
            out_dir = root / vis.name if many else root
            draw_set(vis, out_dir, args.num_queries, args.rank_list_size, args.rerank, args.query_seed, source)
            print(f"Rank lists of {vis.name} written to {out_dir} (open {out_dir / 'index.html'})")
        if many:
            links = [(vis.name, f"{vis.name}/index.html") for vis in sets]
            write_page(root / "index.html", render_links("Rank lists", links))
    return 0
