"""``bpm data check``: index a dataset, decode every image, and print its statistics.

The counts are what the benchmark papers publish, so a user can compare them with the README's
table and know the dataset on disk is complete and read the standard way. A dataset with query and
gallery images but no training images is reported as test-only (usable for evaluation), not as
broken.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from bpm.data.datasets import READERS, build_dataset
from bpm.data.datasets.common import IndexedDataset
from bpm.data.images import find_unreadable
from bpm.data.records import ImageRecord, TestSet

ACTIONS = ("check",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="check: validate a dataset and print its statistics")
    parser.add_argument("--dataset", default="market1501", choices=sorted(READERS), help="dataset name")
    parser.add_argument("--data_root", default="", help="the dataset's folder (default: $BPM_DATA/<dataset folder>)")
    parser.add_argument("--cuhk03_type", default="detected", choices=("detected", "labeled"))
    parser.add_argument("--trainset_part", default="trainval", choices=("trainval", "train"))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--names_only", action="store_true", help="skip decoding the images (index only)")


def _test_stats(test: TestSet) -> dict[str, Any]:
    return {
        "name": test.name,
        "num_query": len(test.query),
        "num_query_ids": len({r.pid for r in test.query}),
        "num_gallery": len(test.gallery),
        "num_gallery_ids": len({r.pid for r in test.gallery}),
        "num_multi_query": len(test.multi_query),
        "num_distractors": sum(r.pid == 0 for r in test.gallery),
        "num_cameras": len({r.camid for r in test.query + test.gallery}),
    }


def dataset_stats(ds: IndexedDataset) -> dict[str, Any]:
    """The numbers ``bpm data check`` prints (no pixels read)."""
    tests = [_test_stats(t) for t in ds.test_sets]
    records: list[ImageRecord] = ds.train + [r for t in ds.test_sets for r in t.query + t.gallery]
    stats: dict[str, Any] = {
        "dataset": ds.name,
        "root": ds.root,
        "layout": ds.layout,
        # A test-only dataset (no training images) can be evaluated but not trained on.
        "test_only": not ds.train,
        "num_train_ids": ds.num_train_ids,
        "num_train_images": len(ds.train),
        "num_query": sum(t["num_query"] for t in tests),
        "num_gallery": sum(t["num_gallery"] for t in tests),
        "num_multi_query": sum(t["num_multi_query"] for t in tests),
        # Members of ``combined`` number their cameras independently: count them per test set.
        "num_cameras": sum(t["num_cameras"] for t in tests) if len(tests) > 1 else len({r.camid for r in records}),
        "num_junk": ds.num_junk,
        "num_distractors": sum(t["num_distractors"] for t in tests),
        "test_sets": tests,
    }
    if ds.val is not None:
        stats["val"] = _test_stats(ds.val)
    return stats


def _all_paths(ds: IndexedDataset) -> list[str]:
    sets = ds.test_sets + ([ds.val] if ds.val else [])
    paths = {r.path for r in ds.train} | {r.path for t in sets for r in t.query + t.gallery + t.multi_query}
    return sorted(paths)


def _print_text(stats: dict[str, Any]) -> None:
    print(f"dataset   {stats['dataset']}  ({stats['layout']})")
    print(f"root      {stats['root']}")
    if stats["test_only"]:
        print("train     none: test-only dataset (query and gallery only); it can be evaluated "
              "(bpm test, bpm visualize) but not trained on")
    else:
        print(f"train     {stats['num_train_ids']} ids, {stats['num_train_images']} images")
    for t in stats["test_sets"] + ([stats["val"]] if "val" in stats else []):
        print(
            f"test {t['name']}: query {t['num_query']} images ({t['num_query_ids']} ids), "
            f"gallery {t['num_gallery']} images ({t['num_gallery_ids']} ids, {t['num_distractors']} distractors), "
            f"multi-query {t['num_multi_query']}, cameras {t['num_cameras']}"
        )
    print(f"cameras   {stats['num_cameras']}")
    print(f"junk      {stats['num_junk']} images excluded")
    if "num_unreadable" in stats:
        print(f"unreadable {stats['num_unreadable']} images")
        for item in stats["unreadable"]:
            print(f"  {item['path']}: {item['reason']}")


def run(args: argparse.Namespace) -> int:
    ds = build_dataset(
        args.dataset, args.data_root or None, cuhk03_type=args.cuhk03_type, trainset_part=args.trainset_part,
        require_train=False, may_write=False,
    )
    stats = dataset_stats(ds)
    if not args.names_only:
        bad = find_unreadable(_all_paths(ds))
        stats["num_unreadable"] = len(bad)
        stats["unreadable"] = [{"path": p, "reason": why} for p, why in bad]
    if args.json:
        print(json.dumps(stats, indent=None))
    else:
        _print_text(stats)
    return 1 if stats.get("num_unreadable") else 0
