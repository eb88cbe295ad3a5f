"""Test-only datasets (query and gallery images, no training images): indexed for evaluation,
refused for training in one line, reported as test-only by ``bpm data check``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dataset_fakes import GALLERY, QUERY, make_market, make_msmt17

from bpm.cli import main
from bpm.data.datasets import build_dataset
from bpm.errors import BpmError

NUM_QUERY = sum(count for _, _, count in QUERY)
NUM_GALLERY = sum(count for pid, _, count in GALLERY if pid != -1)  # junk boxes never reach a split


def _market_without_train(parent: Path, how: str, duke: bool = False) -> Path:
    root = make_market(parent, top="DukeMTMC-reID" if duke else "Market-1501-v15.09.15", duke=duke)
    shutil.rmtree(root / "bounding_box_train")
    if how == "empty":
        (root / "bounding_box_train").mkdir()
    return root


def _folder_layout(parent: Path) -> Path:
    """The ``folder`` layout with query/ and gallery/ only (no train/)."""
    market = make_market(parent / "src")
    root = parent / "customer"
    shutil.copytree(market / "query", root / "query")
    shutil.copytree(market / "bounding_box_test", root / "gallery")
    return root


def _assert_training_refused(raised: BpmError, root: Path) -> None:
    message = str(raised)
    assert str(root) in message and "training needs training images" in message and "\n" not in message


@pytest.mark.parametrize("how", ["empty", "missing"])
def test_market_without_training_images_is_test_only(tmp_path, how):
    root = _market_without_train(tmp_path, how)
    # Found from the parent folder too: a test-only copy has bounding_box_test/ but maybe no bounding_box_train/.
    ds = build_dataset("market1501", tmp_path, require_train=False)
    assert ds.train == [] and ds.num_train_ids == 0 and ds.val is None
    (test,) = ds.test_sets
    assert len(test.query) == NUM_QUERY and len(test.gallery) == NUM_GALLERY and test.multi_query
    with pytest.raises(BpmError) as raised:
        build_dataset("market1501", tmp_path)  # training is the default use
    _assert_training_refused(raised.value, root)
    assert "bounding_box_train/" in str(raised.value)


def test_duke_without_training_folder_is_test_only(tmp_path):
    _market_without_train(tmp_path, "missing", duke=True)
    ds = build_dataset("duke", tmp_path, require_train=False)
    assert ds.train == [] and len(ds.test_sets[0].query) == NUM_QUERY


def test_folder_with_only_query_and_gallery(tmp_path):
    root = _folder_layout(tmp_path)
    ds = build_dataset("folder", root, require_train=False)
    assert ds.train == [] and ds.test_sets[0].name == "folder"
    assert len(ds.test_sets[0].query) == NUM_QUERY and len(ds.test_sets[0].gallery) == NUM_GALLERY
    with pytest.raises(BpmError) as raised:
        build_dataset("folder", root)
    _assert_training_refused(raised.value, root)
    assert "train/" in str(raised.value)


def test_test_only_needs_query_and_gallery(tmp_path):
    root = _folder_layout(tmp_path)
    shutil.rmtree(root / "gallery")
    with pytest.raises(BpmError, match=r"gallery: missing folder"):
        build_dataset("folder", root, require_train=False)


def test_test_only_ignores_the_validation_split_and_skips_bad_images(tmp_path):
    root = _folder_layout(tmp_path)
    bad = sorted((root / "gallery").iterdir())[0]
    bad.write_bytes(b"not an image")
    ds = build_dataset("folder", root, trainset_part="train", skip_bad_images=True, require_train=False)
    assert ds.train == [] and ds.val is None
    assert str(bad) not in {r.path for r in ds.test_sets[0].gallery}


def test_msmt17_without_training_lists_is_test_only(tmp_path):
    base = make_msmt17(tmp_path)
    (base / "list_train.txt").unlink()
    (base / "list_val.txt").unlink()
    ds = build_dataset("msmt17", tmp_path, require_train=False)
    assert ds.train == [] and ds.test_sets[0].query and ds.test_sets[0].gallery
    with pytest.raises(BpmError) as raised:
        build_dataset("msmt17", tmp_path)
    _assert_training_refused(raised.value, base)
    assert "list_train.txt" in str(raised.value)


def test_full_datasets_are_unchanged(tmp_path):
    make_market(tmp_path)
    assert len(build_dataset("market1501", tmp_path).train) == 40
    assert len(build_dataset("market1501", tmp_path, require_train=False).train) == 40


@pytest.mark.parametrize("layout", ["folder", "market1501"])
def test_data_check_reports_test_only(tmp_path, capsys, layout):
    root = _folder_layout(tmp_path) if layout == "folder" else _market_without_train(tmp_path, "empty")
    assert main(["data", "check", "--dataset", layout, "--data_root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "test-only" in out and "unreadable 0 images" in out
    assert main(["data", "check", "--dataset", layout, "--data_root", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["test_only"] is True and stats["num_train_images"] == 0
    assert stats["num_query"] == NUM_QUERY and stats["num_gallery"] == NUM_GALLERY


def test_data_check_full_dataset_is_not_test_only(tmp_path, capsys):
    root = make_market(tmp_path)
    assert main(["data", "check", "--dataset", "market1501", "--data_root", str(root), "--json", "--names_only"]) == 0
    assert json.loads(capsys.readouterr().out)["test_only"] is False
