"""Evaluate a model on a dataset's test sets and report in the original's format.

This is the glue between feature extraction (needs the model) and the evaluation engine
(pure numbers): it prints ``Single Query`` / ``Multi Query`` / re-ranked lines, and writes
``results.json`` with fractions in [0, 1].
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bpm.data.records import ImageRecord, TestSet, id_arrays
from bpm.distributed import DistContext, broadcast_object
from bpm.errors import BpmError
from bpm.evaluation import compute_distances, evaluate, pool_multi_query, re_ranking
from bpm.evaluation.features import degenerate_rows, extract_features
from bpm.evaluation.features_file import FeatureSplit, write_features_file
from bpm.files import write_text
from bpm.models.input_spec import InputSpec
from bpm.precision import PrecisionPolicy


RESULT_LINE = "[mAP: {:5.2%}], [cmc1: {:5.2%}], [cmc5: {:5.2%}], [cmc10: {:5.2%}]"
MINP_FIELD = ", [mINP: {:5.2%}]"


@dataclass(frozen=True)
class EvalSettings:
    """How one evaluation runs; made at the command boundary from the feature and test groups."""

    input_spec: InputSpec  # the model's input (size, normalisation)
    normalize_feature: bool = False
    rerank: bool = False
    flip: bool = False
    batch_size: int = 64
    workers: int = 2
    max_rank: int = 50
    save_features: str | None = None
    mq_pooling: str = "average"
    features_attrs: dict | None = None  # recorded in the --save_features file (weights, net, run folder, time)


def format_result(title: str, result: dict) -> str:
    cmc = result["cmc"]
    line = f"{title + ':':<30}" + RESULT_LINE.format(result["mAP"], cmc[0], cmc[4], cmc[9])
    # mINP after the original's four fields, so parsers of the original's line keep working.
    return line + (MINP_FIELD.format(float(result["mINP"])) if "mINP" in result else "")


def summarize(result: dict) -> dict:
    """The JSON-friendly part of an evaluation result: mAP, mINP and CMC at ranks 1/5/10."""
    cmc = result["cmc"]
    return {
        "mAP": float(result["mAP"]),
        "mINP": float(result["mINP"]),
        "cmc": {"1": float(cmc[0]), "5": float(cmc[4]), "10": float(cmc[9])},
        "num_valid_queries": int(result["num_valid_queries"]),
        **({"degenerate_features": result["degenerate_features"]} if "degenerate_features" in result else {}),
    }


def evaluate_features(
    q_feat: np.ndarray,
    g_feat: np.ndarray,
    query: list[ImageRecord],
    gallery: list[ImageRecord],
    rerank: bool,
    max_rank: int = 50,
    q_feat_for_rerank: np.ndarray | None = None,
    ap: str = "sklearn",
    protocol: str = "market1501",
) -> dict[str, dict]:
    """Plain (and optionally re-ranked) results for one set of query features, with the AP definition and
    protocol of :func:`bpm.evaluation.metrics.evaluate`."""
    q_pids, q_cams = id_arrays(query)
    g_pids, g_cams = id_arrays(gallery)
    q_g = compute_distances(q_feat, g_feat)
    scoring = {"max_rank": max_rank, "ap": ap, "protocol": protocol}
    results = {"plain": evaluate(q_g, q_pids, g_pids, q_cams, g_cams, **scoring)}
    if rerank:
        q_q = compute_distances(q_feat, q_feat)
        g_g = compute_distances(g_feat, g_feat)
        results["reranked"] = evaluate(re_ranking(q_g, q_q, g_g), q_pids, g_pids, q_cams, g_cams, **scoring)
    return results


def evaluate_test_set(
    model: torch.nn.Module, test_set: TestSet, policy: PrecisionPolicy, settings: EvalSettings, verbose: bool = True,
    features_out: dict | None = None, ctx: DistContext | None = None,
) -> dict:
    """Extract features for one test set and evaluate single-query and (where present) multi-query.

    With ``settings.save_features`` the features go into ``features_out`` (the caller writes every
    test set's into one new file) or, when called alone, into a new file of this test set only.
    ``ctx`` of a multi-process job (the command's, passed in) splits extraction over the ranks;
    rank 0 alone computes the metrics and every rank returns its report. ``None``: one process.
    """
    if not test_set.gallery:
        raise BpmError(f"test set {test_set.name}: the gallery is empty")
    if not test_set.query:
        raise BpmError(f"test set {test_set.name}: there are no query images")
    extract = lambda records, desc: extract_features(  # noqa: E731
        model, records, policy, settings.input_spec, settings.batch_size, settings.workers, settings.flip,
        settings.normalize_feature, desc, ctx,
    )
    q_feat = extract(test_set.query, "query")
    g_feat = extract(test_set.gallery, "gallery")
    mq_feat = extract(test_set.multi_query, "multi-query") if test_set.multi_query else None
    sharded = ctx is not None and ctx.enabled
    if sharded and not ctx.is_main:
        return _report_from_main(ctx, None)
    degenerate = _degenerate_features(test_set.name, policy, {"query": q_feat, "gallery": g_feat, "multi-query": mq_feat})
    if settings.save_features:
        splits = {f"{test_set.name}/query": FeatureSplit.from_records(q_feat, test_set.query),
                  f"{test_set.name}/gallery": FeatureSplit.from_records(g_feat, test_set.gallery)}
        if features_out is None:
            write_features_file(settings.save_features, splits, _features_attrs(settings))
            print(f"Features written to {settings.save_features}")
        else:
            features_out.update(splits)
    single = evaluate_features(q_feat, g_feat, test_set.query, test_set.gallery, settings.rerank, settings.max_rank)
    report = {"single_query": single["plain"]}
    if "reranked" in single:
        report["reranked_single_query"] = single["reranked"]
    if mq_feat is not None:
        mq_pids, mq_cams = id_arrays(test_set.multi_query)
        q_pids, q_cams = id_arrays(test_set.query)
        pooled = pool_multi_query(mq_feat, mq_pids, mq_cams, q_pids, q_cams, settings.mq_pooling)
        multi = evaluate_features(pooled, g_feat, test_set.query, test_set.gallery, settings.rerank, settings.max_rank)
        report["multi_query"] = multi["plain"]
        if "reranked" in multi:
            report["reranked_multi_query"] = multi["reranked"]
    if degenerate:
        for result in report.values():
            result["degenerate_features"] = degenerate
    if verbose:
        print(f"Test set {test_set.name}: {len(test_set.query)} queries x {len(test_set.gallery)} gallery images")
        titles = {"single_query": "Single Query", "multi_query": "Multi Query",
                  "reranked_single_query": "Re-ranked Single Query", "reranked_multi_query": "Re-ranked Multi Query"}
        for key, title in titles.items():
            if key in report:
                print(format_result(title, report[key]))
    return _report_from_main(ctx, report) if sharded else report


def _degenerate_features(name: str, policy: PrecisionPolicy, splits: dict[str, np.ndarray | None]) -> dict:
    """Flag all-zero feature rows (one warning line per split) and refuse non-finite ones.

    All-zero rows are not an error: an untrained network evaluated in half precision produces
    them legitimately, and a validation pass must not end a training run; but the metrics must
    not pass unflagged. Non-finite rows have no distances at all, so they stop the evaluation.
    """
    precision = "float32" if policy.opt_level == "O0" else str(policy.half_dtype).replace("torch.", "")
    advice = "" if policy.opt_level == "O0" else "; evaluate with --opt-level O0"
    found = {}
    for split, features in splits.items():
        if features is None:
            continue
        counts = degenerate_rows(features)
        if counts["non_finite"]:
            raise BpmError(f"test set {name}: {counts['non_finite']} of {len(features)} {split} features are not "
                           f"finite at {policy.opt_level} ({precision} overflow){advice}")
        if counts["all_zero"]:
            found[split] = counts
            print(f"WARNING test set {name}: {counts['all_zero']} of {len(features)} {split} features are all zero at "
                  f"{policy.opt_level} ({precision} underflow?); the metrics below are not meaningful{advice}", flush=True)
        elif counts["near_constant"]:
            found[split] = counts
            warn_near_constant(name, split, len(features))
    return found


def warn_near_constant(name: str, split: str, count: int) -> None:
    """One warning line: features that barely depend on the image rank by ties (gallery order)."""
    print(f"WARNING test set {name}: the {count} {split} features are nearly the same vector for every image "
          "(the embedding does not depend on its input); the metrics below rank ties and are not meaningful",
          flush=True)


def _report_from_main(ctx: DistContext, report: dict | None) -> dict:
    """Rank 0 computes the metrics once (re-ranking is memory-hungry); every rank gets its report."""
    return broadcast_object(ctx, report)


def evaluate_model(
    model: torch.nn.Module, test_sets: list[TestSet], policy: PrecisionPolicy, settings: EvalSettings,
    ctx: DistContext | None = None,
) -> dict[str, dict]:
    """Every test set; ``--save_features`` gets one new file holding exactly these test sets.

    ``ctx``: as :func:`evaluate_test_set` (``None``: one process)."""
    collected: dict = {}
    reports = {ts.name: evaluate_test_set(model, ts, policy, settings, features_out=collected, ctx=ctx)
               for ts in test_sets}
    if settings.save_features and collected:
        write_features_file(settings.save_features, collected, _features_attrs(settings))
        print(f"Features written to {settings.save_features}")
    return reports


def _features_attrs(settings: EvalSettings) -> dict:
    import time

    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "normalized": int(settings.normalize_feature),
            "flip": int(settings.flip), "resize_h_w": str(tuple(settings.input_spec.resize_h_w)), **(settings.features_attrs or {})}


def write_results(path: Path, dataset: str, net: str, opt_level: str, reports: dict[str, dict], extra: dict | None = None) -> dict:
    """Write ``results.json``; top-level metrics are the first test set's single-query numbers."""
    test_sets = {name: {k: summarize(v) for k, v in report.items()} for name, report in reports.items()}
    first = next(iter(test_sets.values()))["single_query"]
    payload = {"dataset": dataset, "net": net, "opt_level": opt_level, "mAP": first["mAP"], "mINP": first["mINP"],
               "cmc": first["cmc"], "test_sets": test_sets, **(extra or {})}
    write_text(path, json.dumps(payload, indent=2), "results")  # any OSError: one line, the old file kept
    return payload
