"""``bpm evaluate --features_file F.h5``: evaluate saved features again, without the model.

A features file (:mod:`bpm.evaluation.features_file`) from ``bpm test --save_features F.h5`` or
``bpm extract`` of a query/gallery folder carries names, pids and camids, so re-evaluating needs no
images or weights: with re-ranking (``--rerank``), the official Market-1501 MATLAB AP
(``--ap market_matlab``) or the old CUHK03 single-shot protocol (``--protocol cuhk03``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bpm.cli.switches import add_exp_dir_switch, add_normalize_switch, add_rerank_switch
from bpm.engine.evaluator import evaluate_features, format_result, warn_near_constant, write_results
from bpm.evaluation.features import near_constant_rows
from bpm.evaluation.metrics import AP_DEFINITIONS, PROTOCOLS
from bpm.evaluation.features_file import evaluation_normalization, read_attrs, read_test_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features_file", required=True, help="HDF5 file written by --save_features")
    add_normalize_switch(parser, model_default=True)
    add_rerank_switch(parser, default=True)
    parser.add_argument("--ap", default="sklearn", choices=AP_DEFINITIONS,
                        help="AP definition: sklearn (mean precision at each true match; the papers' mAP) or "
                             "market_matlab (the official Market-1501 MATLAB code's trapezoid)")
    parser.add_argument("--protocol", default="market1501", choices=PROTOCOLS,
                        help="market1501 (every gallery match counts) or cuhk03 (the old CUHK03 single-shot "
                             "protocol: one random gallery image per identity, averaged over 10 draws)")
    add_exp_dir_switch(parser, help="write results.json here (optional)")


def run(args: argparse.Namespace) -> int:
    if not args.exp_dir:
        return _evaluate(args)
    from bpm.engine.runfolder import RunLock

    Path(args.exp_dir).mkdir(parents=True, exist_ok=True)
    # Like bpm train/test: a folder another run holds is refused before any work, so a training run's
    # folder never receives results of another model's features.
    with RunLock(args.exp_dir, "bpm evaluate"):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    reports = {}
    normalize = evaluation_normalization(args.features_file, args.normalize_feature)  # the model's, unless told
    for saved in read_test_sets(args.features_file, normalize):
        for split, feats in (("query", saved.query_features), ("gallery", saved.gallery_features)):
            if near_constant_rows(feats):  # saved features carry no model to blame, but are flagged all the same
                warn_near_constant(saved.name, split, len(feats))
        results = evaluate_features(saved.query_features, saved.gallery_features, saved.query, saved.gallery,
                                    args.rerank, ap=args.ap, protocol=args.protocol)
        print(f"Test set {saved.name}: {len(saved.query)} queries x {len(saved.gallery)} gallery images")
        print(format_result("Single Query", results["plain"]))
        report = {"single_query": results["plain"]}
        if "reranked" in results:
            print(format_result("Re-ranked Single Query", results["reranked"]))
            report["reranked_single_query"] = results["reranked"]
        reports[saved.name] = report
    if args.exp_dir:
        from bpm.engine.runfolder import record_names

        # In a training folder: test_results.json, never the training run's results.json.
        results_name = record_names(args.exp_dir, training=False)[1]
        source = read_attrs(args.features_file)  # what the features came from, as the file records it
        write_results(Path(args.exp_dir) / results_name, str(source.get("dataset") or "features"),
                      str(source.get("net") or "unknown"), str(source.get("opt_level") or "-"), reports,
                      {"ap": args.ap, "protocol": args.protocol,
                       "features_file": str(Path(args.features_file).resolve()),
                       "weights": source.get("weights"), "features_written_by": source.get("command")})
        print(f"Results written to {Path(args.exp_dir) / results_name}")
    return 0
