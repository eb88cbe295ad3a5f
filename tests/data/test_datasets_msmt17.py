"""MSMT17 V1/V2 from list files; camera from the name's third field."""
from __future__ import annotations

import pytest
from dataset_fakes import MSMT_GALLERY, MSMT_QUERY, MSMT_TRAIN, MSMT_VAL, make_msmt17

from bpm.data.datasets import build_dataset
from bpm.errors import BpmError


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_lists(tmp_path, version):
    make_msmt17(tmp_path / "msmt17", version)
    ds = build_dataset("msmt17", tmp_path / "msmt17")
    assert ds.layout == f"MSMT17_{version} list files"
    assert len(ds.train) == len(MSMT_TRAIN) + len(MSMT_VAL) and ds.num_train_ids == 4
    (test,) = ds.test_sets
    assert [(r.pid, r.camid) for r in test.query] == MSMT_QUERY
    assert [(r.pid, r.camid) for r in test.gallery] == MSMT_GALLERY
    assert sorted({r.camid for r in ds.train}) == [1, 2, 3, 4, 15]


def test_list_naming_missing_image(tmp_path):
    base = make_msmt17(tmp_path, "V1")
    lines = (base / "list_gallery.txt").read_text().splitlines()
    victim = lines[1].split()[0]
    (base / "test" / victim).unlink()
    with pytest.raises(BpmError) as err:
        build_dataset("msmt17", tmp_path)
    assert f"list_gallery.txt:2: names image {victim}" in str(err.value)


def test_malformed_list_line(tmp_path):
    base = make_msmt17(tmp_path, "V1")
    (base / "list_query.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg\n")
    with pytest.raises(BpmError, match=r"list_query.txt:1: expected '<relative path> <label>'"):
        build_dataset("msmt17", tmp_path)
