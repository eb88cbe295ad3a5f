"""``bpm visualize`` / ``script/experiment/visualize_rank_list.py`` / ``vis_res.sh``: rank-list pictures.

Features come either from a model (weights file or checkpoint, extracted under the precision
policy of ``--opt-level``) or from a features file (``bpm test --save_features``, ``bpm extract``). The
same queries are drawn for every model (see :func:`bpm.vis.rank_list.choose_queries`), and an
``index.html`` beside the JPEGs lists each with its AP and first-match rank.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bpm.cli.switches import (add_dataset_features_switches, add_output_switches, add_rerank_switch, add_weights_switches,
                        data_settings, default_exp_dir, feature_settings, model_settings, precision_settings)
from bpm.data.records import ImageRecord, TestSet
from bpm.errors import BpmError
from bpm.vis.html import render_links, write_page
from bpm.vis.rank_list import QUERY_SEED
from bpm.vis.rank_pages import VisSet, check_set, draw_set, load_feature_sets
from bpm.settings import DataSettings, FeatureSettings, ModelSettings, PrecisionSettings

RANK_LISTS = "rank_lists"


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
    from bpm.cli.checks import check_common

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
        check_set(vis, args.rank_list_size)
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
