"""The original's converted layout (images/ + partitions.pkl) and the combined dataset."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_fakes import make_cuhk03_release, make_market, write_jpeg, write_py2_pickle

from bpm.data.datasets import build_dataset
from bpm.data.convert import combine_trainval_sets, transform_cuhk03, transform_duke, transform_market1501
from bpm.errors import BpmError

TRAINVAL = ["00000002_0001_00000000.jpg", "00000002_0002_00000000.jpg", "00000005_0001_00000000.jpg"]
TRAINVAL += [f"{pid:08d}_{cam:04d}_00000000.jpg" for pid in range(6, 12) for cam in (1, 2)]
QUERY = ["00000020_0001_00000000.jpg"]
MULTI = ["00000020_0001_00000001.jpg"]
GALLERY = ["00000020_0002_00000000.jpg", "00000000_0003_00000000.jpg"]


def _make_converted(root, py2_numpy=True):
    for name in TRAINVAL + QUERY + MULTI + GALLERY:
        write_jpeg(root / "images" / name)
    names = (lambda v: np.array(v, dtype="S")) if py2_numpy else list
    test = QUERY + MULTI + GALLERY
    write_py2_pickle(
        root / "partitions.pkl",
        {
            "trainval_im_names": names(TRAINVAL),
            "trainval_ids2labels": {2: 0, 5: 1},
            "train_im_names": names(TRAINVAL[2:]),
            "train_ids2labels": {5: 0},
            "val_im_names": names(TRAINVAL[:2]),
            "val_marks": [0, 1],
            "test_im_names": names(test),
            "test_marks": [0, 2, 1, 1],
        },
    )
    return root


@pytest.mark.parametrize("py2_numpy", [True, False])
def test_converted_layout_is_detected_in_any_dataset_folder(tmp_path, py2_numpy):
    root = _make_converted(tmp_path / "duke", py2_numpy)
    ds = build_dataset("duke", root)
    assert ds.layout.startswith("converted")
    assert ds.num_train_ids == 8 and len(ds.train) == 15
    (test,) = ds.test_sets
    assert [(r.pid, r.camid) for r in test.query] == [(20, 1)]
    assert [(r.pid, r.camid) for r in test.multi_query] == [(20, 1)]
    assert [(r.pid, r.camid) for r in test.gallery] == [(20, 2), (0, 3)]


def test_converted_train_part_uses_the_files_own_split(tmp_path):
    ds = build_dataset("market1501", _make_converted(tmp_path / "m"), trainset_part="train")
    assert len(ds.train) == 13 and ds.num_train_ids == 7
    assert [(r.pid, r.camid) for r in ds.val.query] == [(2, 1)]
    assert [(r.pid, r.camid) for r in ds.val.gallery] == [(2, 2)]


def test_partition_naming_missing_image(tmp_path):
    root = _make_converted(tmp_path / "m")
    (root / "images" / GALLERY[1]).unlink()
    with pytest.raises(BpmError) as err:
        build_dataset("market1501", root)
    assert GALLERY[1] in str(err.value) and "partitions.pkl" in str(err.value)


def test_converted_cuhk03_subfolder_by_type(tmp_path):
    _make_converted(tmp_path / "cuhk03" / "labeled")
    with pytest.raises(BpmError, match="cuhk03_release"):
        build_dataset("cuhk03", tmp_path / "cuhk03")  # detected/ missing and no raw release
    assert len(build_dataset("cuhk03", tmp_path / "cuhk03", cuhk03_type="labeled").train) == 15


def test_transforms_round_trip_and_combined(tmp_path, monkeypatch):
    home = tmp_path / "Dataset"
    make_market(home / "market1501")
    make_market(home / "duke", top="DukeMTMC-reID", duke=True)
    make_cuhk03_release(home / "cuhk03", "both")
    raw = {n: build_dataset(n, home / n) for n in ("market1501", "duke", "cuhk03")}
    monkeypatch.setenv("BPM_DATA", str(home))
    combined_raw = build_dataset("combined")
    assert [t.name for t in combined_raw.test_sets] == ["market1501", "cuhk03", "duke"]
    assert combined_raw.num_train_ids == 10 + 4 + 10 and len(combined_raw.train) == 40 + len(raw["cuhk03"].train) + 40
    assert sorted({r.pid for r in combined_raw.train}) == list(range(24))

    transform_market1501(home / "market1501" / "Market-1501-v15.09.15", home / "market1501")
    transform_duke(home / "duke" / "DukeMTMC-reID", home / "duke")
    transform_cuhk03(home / "cuhk03" / "cuhk03_release", home / "cuhk03" / "re_ranking_train_test_split.pkl", home / "cuhk03")
    for name in ("market1501", "duke", "cuhk03"):
        conv = build_dataset(name)
        assert conv.layout.startswith("converted"), name
        a, b = raw[name], conv
        assert a.num_train_ids == b.num_train_ids and len(a.train) == len(b.train), name
        assert len(a.test_sets[0].query) == len(b.test_sets[0].query), name
        assert len(a.test_sets[0].gallery) == len(b.test_sets[0].gallery), name
        assert len(a.test_sets[0].multi_query) == len(b.test_sets[0].multi_query), name
    # the original's converted CUHK03 names are the pickle's names
    cu = build_dataset("cuhk03")
    assert sorted(p.name for p in (home / "cuhk03" / "detected" / "images").iterdir())[0] == "00000000_0000_00000000.jpg"
    assert {r.camid for r in cu.test_sets[0].query} == {0, 1}

    combine_trainval_sets(
        [home / n / "images" for n in ("market1501", "cuhk03/detected", "duke")],
        [home / n / "partitions.pkl" for n in ("market1501", "cuhk03/detected", "duke")],
        home / "market1501_cuhk03_duke",
    )
    combined = build_dataset("combined")
    assert combined.layout.startswith("converted trainval_images")
    assert combined.num_train_ids == 24 and len(combined.train) == len(combined_raw.train)
    assert [len(t.query) for t in combined.test_sets] == [len(t.query) for t in combined_raw.test_sets]
    val = build_dataset("combined", trainset_part="train")
    assert val.num_train_ids == 24 - 4 and val.val is not None


def test_combined_missing_member_names_it(tmp_path):
    make_market(tmp_path / "market1501")
    with pytest.raises(BpmError, match="cuhk03"):
        build_dataset("combined", tmp_path / "market1501_cuhk03_duke")
