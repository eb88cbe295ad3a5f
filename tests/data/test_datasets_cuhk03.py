"""CUHK03 from the v7.3 ``cuhk-03.mat`` with the new protocol from ``.mat`` or ``.pkl``."""
from __future__ import annotations

import os

import numpy as np
import pytest
from dataset_fakes import (
    CUHK_TEST_PIDS,
    cuhk_split,
    cuhk_value,
    global_pid,
    make_cuhk03_release,
    write_py2_pickle,
)
from PIL import Image

from bpm.data.datasets import build_dataset
from bpm.errors import BpmError


def _expected(im_type: str, key: str, pid_base: int):
    return sorted((global_pid(p, q) + pid_base, 2 * p + c // 5 + 1) for p, q, c in cuhk_split(im_type)[key])


@pytest.mark.parametrize("im_type", ["detected", "labeled"])
def test_protocol_mat_gives_exact_splits(tmp_path, im_type):
    make_cuhk03_release(tmp_path, "mat")
    ds = build_dataset("cuhk03", tmp_path, cuhk03_type=im_type)
    (test,) = ds.test_sets
    assert test.name == "cuhk03"
    # .mat labels are 1-based
    assert sorted((r.pid, r.camid) for r in test.query) == _expected(im_type, "query", 1)
    assert sorted((r.pid, r.camid) for r in test.gallery) == _expected(im_type, "gallery", 1)
    assert len(ds.train) == len(cuhk_split(im_type)["train"])
    assert ds.num_train_ids == 7 - len(CUHK_TEST_PIDS)
    assert {r.camid for r in ds.train + test.query + test.gallery} == {1, 2, 3, 4}


def test_detected_skips_empty_cells_and_extracts_the_right_pixels(tmp_path):
    make_cuhk03_release(tmp_path, "mat")
    ds = build_dataset("cuhk03", tmp_path, cuhk03_type="detected")
    names = {os.path.basename(r.path) for r in ds.train + ds.test_sets[0].query + ds.test_sets[0].gallery}
    assert len(names) == 70 - 3  # 7 persons x 10 columns minus three empty cells
    assert "1_002_1_04.png" not in names and "2_003_2_10.png" not in names
    path = next(r.path for r in ds.train if r.path.endswith("2_001_2_07.png"))
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (6, 3, 3) and (pixels == cuhk_value(1, 0, 6, labeled=False)).all()
    cache = tmp_path / "cuhk03_release" / "bpm_images_detected"
    assert cache.is_dir() and not [p for p in cache.parent.iterdir() if p.name.startswith(".bpm_images")]


def test_python2_pickle_protocol_matches_mat_protocol(tmp_path):
    make_cuhk03_release(tmp_path, "pkl")
    for im_type in ("detected", "labeled"):
        ds = build_dataset("cuhk03", tmp_path, cuhk03_type=im_type)
        (test,) = ds.test_sets
        assert sorted((r.pid, r.camid) for r in test.query) == _expected(im_type, "query", 0)
        assert sorted((r.pid, r.camid) for r in test.gallery) == _expected(im_type, "gallery", 0)
        assert len(ds.train) == len(cuhk_split(im_type)["train"])
        assert all(os.path.isfile(r.path) for r in ds.train)


def test_zipped_release_and_missing_protocol(tmp_path):
    import zipfile

    src = make_cuhk03_release(tmp_path / "src", "mat")
    root = tmp_path / "cuhk03"
    root.mkdir()
    with zipfile.ZipFile(root / "cuhk03_release.zip", "w") as z:
        z.write(src / "cuhk03_release" / "cuhk-03.mat", "cuhk03_release/cuhk-03.mat")
    with pytest.raises(BpmError, match="cuhk03_new_protocol_config_detected.mat"):
        build_dataset("cuhk03", root)
    (src / "cuhk03_new_protocol_config_detected.mat").rename(root / "cuhk03_new_protocol_config_detected.mat")
    assert len(build_dataset("cuhk03", root).test_sets[0].query) == 6


def test_split_naming_missing_image_is_one_clear_line(tmp_path):
    make_cuhk03_release(tmp_path, "mat")
    split = {
        t: {"train_im_names": ["00000000_0000_00000003.jpg"], "query_im_names": [], "gallery_im_names": []}
        for t in ("detected", "labeled")
    }
    (tmp_path / "cuhk03_new_protocol_config_detected.mat").unlink()
    write_py2_pickle(tmp_path / "re_ranking_train_test_split.pkl", split)
    build_dataset("cuhk03", tmp_path, cuhk03_type="labeled")  # exists in labeled (mat protocol)
    split["detected"]["train_im_names"] = ["00000001_0000_00000003.jpg"]  # an empty cell in detected
    write_py2_pickle(tmp_path / "re_ranking_train_test_split.pkl", split)
    with pytest.raises(BpmError) as err:
        build_dataset("cuhk03", tmp_path, cuhk03_type="detected")
    assert "00000001_0000_00000003.jpg" in str(err.value) and "\n" not in str(err.value)


def test_not_a_mat_file(tmp_path):
    (tmp_path / "cuhk03_release").mkdir()
    (tmp_path / "cuhk03_release" / "cuhk-03.mat").write_bytes(b"MATLAB 5.0 nonsense")
    (tmp_path / "re_ranking_train_test_split.pkl").write_bytes(b"")
    with pytest.raises(BpmError, match="cuhk-03.mat"):
        build_dataset("cuhk03", tmp_path)
