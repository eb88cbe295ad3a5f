"""Market-1501, DukeMTMC-reID and ``folder`` layouts, raw and zipped; the validation split."""
from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import pytest
from dataset_fakes import make_market, market_name, write_jpeg

from bpm.data.datasets import build_dataset
from bpm.errors import BpmError


def _ids_cams(records):
    return sorted((r.pid, r.camid) for r in records)


def test_market_release_splits_ids_and_cameras(tmp_path):
    make_market(tmp_path / "market1501")
    ds = build_dataset("market1501", tmp_path / "market1501")
    assert ds.num_train_ids == 10 and len(ds.train) == 40
    assert sorted({r.pid for r in ds.train}) == list(range(10))  # relabelled contiguously
    (test,) = ds.test_sets
    assert test.name == "market1501"
    assert _ids_cams(test.query) == [(11, 1), (12, 1), (12, 3)]
    # junk (-1) excluded, distractors (0) kept
    assert _ids_cams(test.gallery) == [(0, 1), (0, 1), (11, 1), (11, 2), (11, 2), (12, 2), (13, 4)]
    assert ds.num_junk == 3
    # multi-query: gt_bbox images whose (id, cam) occurs in query
    assert _ids_cams(test.multi_query) == [(11, 1), (11, 1), (12, 3)]
    assert ds.val is None
    assert all(Path(r.path).is_file() for r in ds.train + test.query + test.gallery)


def test_market_under_bpm_data_and_data_root_wins(tmp_path, monkeypatch):
    make_market(tmp_path / "home" / "market1501")
    monkeypatch.setenv("BPM_DATA", str(tmp_path / "home"))
    assert len(build_dataset("market1501").train) == 40
    with pytest.raises(BpmError, match="nowhere"):
        build_dataset("market1501", tmp_path / "nowhere")


def test_market_zip_is_extracted_once_beside_it(tmp_path):
    src = make_market(tmp_path / "src")
    folder = tmp_path / "market1501"
    folder.mkdir()
    archive = folder / "Market-1501-v15.09.15.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(src.rglob("*.jpg")):
            z.write(p, p.relative_to(src.parent).as_posix())
    ds = build_dataset("market1501", folder)
    assert len(ds.train) == 40 and (folder / "Market-1501-v15.09.15" / "query").is_dir()
    assert not [p for p in folder.iterdir() if p.name.startswith(".bpm-unzip")]
    # the zip itself as --data_root gives the same dataset, without extracting again
    again = build_dataset("market1501", archive)
    assert [r.path for r in again.train] == [r.path for r in ds.train]


def test_duke_release(tmp_path):
    make_market(tmp_path / "duke", top="DukeMTMC-reID", duke=True)
    ds = build_dataset("duke", tmp_path / "duke")
    (test,) = ds.test_sets
    assert ds.num_train_ids == 10 and test.name == "duke"
    assert _ids_cams(test.query) == [(11, 1), (12, 1), (12, 3)]
    assert test.multi_query == []
    assert ds.layout == "DukeMTMC-reID release"


def test_folder_layout(tmp_path):
    root = tmp_path / "mine"
    for split, spec in (("train", [(5, 1), (5, 2), (9, 3)]), ("query", [(7, 1)]), ("gallery", [(7, 2), (8, 1)])):
        for k, (pid, cam) in enumerate(spec):
            write_jpeg(root / split / market_name(pid, cam, k))
    ds = build_dataset("folder", root)
    assert _ids_cams(ds.train) == [(0, 1), (0, 2), (1, 3)]
    assert _ids_cams(ds.test_sets[0].gallery) == [(7, 2), (8, 1)]
    with pytest.raises(BpmError, match="--data_root"):
        build_dataset("folder")


def test_missing_subfolder_names_it(tmp_path):
    root = make_market(tmp_path / "m")
    shutil.rmtree(root / "query")
    with pytest.raises(BpmError, match=r"query: missing folder"):
        build_dataset("market1501", root)


def test_malformed_name_names_the_file(tmp_path):
    root = make_market(tmp_path / "m")
    write_jpeg(root / "bounding_box_train" / "person.jpg")
    with pytest.raises(BpmError) as err:
        build_dataset("market1501", root)
    assert "person.jpg" in str(err.value) and "\n" not in str(err.value)


def test_unknown_options_are_refused(tmp_path):
    with pytest.raises(BpmError, match="--trainset_part"):
        build_dataset("market1501", tmp_path, trainset_part="all")
    with pytest.raises(BpmError, match="--cuhk03_type"):
        build_dataset("cuhk03", tmp_path, cuhk03_type="both")
    with pytest.raises(BpmError, match="--dataset"):
        build_dataset("viper", tmp_path)


def test_trainset_part_train_holds_out_seeded_ids(tmp_path):
    root = make_market(tmp_path / "m")
    full = build_dataset("market1501", root)
    a = build_dataset("market1501", root, trainset_part="train", seed=3)
    b = build_dataset("market1501", root, trainset_part="train", seed=3)
    # 10 ids: at most a fifth are held out
    assert a.num_train_ids == 8 and sorted({r.pid for r in a.train}) == list(range(8))
    assert [r.path for r in a.val.query] == [r.path for r in b.val.query]
    val_ids = {r.pid for r in a.val.query + a.val.gallery}
    assert len(val_ids) == 2 and not val_ids & {11, 12, 13}
    # one query per (id, camera), the rest in the gallery; nothing lost
    assert len({(r.pid, r.camid) for r in a.val.query}) == len(a.val.query) == 4
    assert len(a.train) + len(a.val.query) + len(a.val.gallery) == len(full.train)
    assert a.test_sets[0].query == full.test_sets[0].query  # test set untouched
    other = build_dataset("market1501", root, trainset_part="train", seed=4)
    assert {r.path for r in other.val.gallery} != {r.path for r in a.val.gallery}


def test_truncated_jpeg_is_skipped_with_a_warning(tmp_path, caplog):
    root = make_market(tmp_path / "m")
    victim = root / "bounding_box_train" / sorted(p.name for p in (root / "bounding_box_train").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    assert len(build_dataset("market1501", root).train) == 40  # indexing never decodes
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("market1501", root, skip_bad_images=True)
    assert len(ds.train) == 39 and str(victim) not in {r.path for r in ds.train}
    assert "skipped 1 unreadable images" in caplog.text and victim.name in caplog.text
