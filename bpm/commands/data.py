"""``bpm data check``: index a dataset, decode every image, and print its statistics.

The statistics themselves are :func:`bpm.data.check.dataset_stats`; this module parses the
switches and prints them as text or one JSON object.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from bpm.data.check import all_image_paths, dataset_stats
from bpm.cli.switches import add_data_switches, data_settings
from bpm.data.images import find_unreadable

ACTIONS = ("check",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="check: validate a dataset and print its statistics")
    add_data_switches(parser, training_split=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--names_only", action="store_true", help="skip decoding the images (index only)")


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
    ds = data_settings(args).build(require_train=False, may_write=False)
    stats = dataset_stats(ds)
    if not args.names_only:
        bad = find_unreadable(all_image_paths(ds))
        stats["num_unreadable"] = len(bad)
        stats["unreadable"] = [{"path": p, "reason": why} for p, why in bad]
    if args.json:
        print(json.dumps(stats, indent=None))
    else:
        _print_text(stats)
    return 1 if stats.get("num_unreadable") else 0
