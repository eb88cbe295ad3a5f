"""What ``bpm data check`` reports about a dataset: its statistics and every image path to decode.

The counts are what the benchmark papers publish, so a user can compare them with the table in
docs/guide/datasets.md and know the dataset on disk is complete and read the standard way. A dataset with query and
gallery images but no training images is reported as test-only (usable for evaluation), not as
broken.
"""
from __future__ import annotations

from typing import Any

from bpm.data.datasets.common import IndexedDataset
from bpm.data.records import ImageRecord, TestSet

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


def all_image_paths(ds: IndexedDataset) -> list[str]:
    sets = ds.test_sets + ([ds.val] if ds.val else [])
    paths = {r.path for r in ds.train} | {r.path for t in sets for r in t.query + t.gallery + t.multi_query}
    return sorted(paths)
