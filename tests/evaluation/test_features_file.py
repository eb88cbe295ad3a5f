"""The one features-file format: written atomically with its version and source, read in any version."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bpm.data.records import ImageRecord
from bpm.errors import BpmError
from bpm.evaluation.features_file import (FORMAT_VERSION, FeatureSplit, evaluation_normalization,
                                          normalization_attrs, read_features_file, read_test_sets, save_features,
                                          write_features_file)


def _records(n: int, cam: int) -> list[ImageRecord]:
    return [ImageRecord(f"/data/{i % 3 + 1:04d}_c{cam}s1_{i:06d}_00.jpg", i % 3 + 1, cam) for i in range(n)]


def _features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)


def test_round_trip_keeps_features_ids_attrs_and_version(tmp_path):
    path = tmp_path / "f.h5"
    query, gallery = _records(4, 1), _records(9, 2)
    write_features_file(path, {"toy/query": FeatureSplit.from_records(_features(4), query),
                               "toy/gallery": FeatureSplit.from_records(_features(9, 1), gallery)},
                        {"weights": "/w.pth", "flip": 1, "note": None})
    file = read_features_file(path)
    assert file.format_version == FORMAT_VERSION == 2
    assert file.attrs == {"weights": "/w.pth", "flip": 1, "note": ""}
    assert sorted(file.splits) == ["toy/gallery", "toy/query"]
    split = file.splits["toy/query"]
    assert np.array_equal(split.features, _features(4)) and split.records() == query
    assert split.names == [r.path.rsplit("/", 1)[1] for r in query]
    with h5py.File(path) as handle:  # the documented dtypes
        group = handle["toy/query"]
        assert group["features"].dtype == np.float32 and group["pids"].dtype == np.int64
        assert h5py.check_string_dtype(group["paths"].dtype) is not None
    (saved,) = read_test_sets(path)
    assert saved.name == "toy" and saved.gallery == gallery and np.array_equal(saved.gallery_features, _features(9, 1))


def test_write_replaces_an_older_file_whole(tmp_path):
    path = tmp_path / "f.h5"
    save_features(path, _features(2), _records(2, 1), "old/query")
    write_features_file(path, {"new/query": FeatureSplit.from_records(_features(3), _records(3, 1))}, {})
    assert list(read_features_file(path).splits) == ["new/query"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_old_save_features_files_without_a_version_still_read(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as handle:  # what --save_features wrote before format_version
        for side, n in (("query", 3), ("gallery", 6)):
            records = _records(n, 1 if side == "query" else 2)
            handle[f"market1501/{side}/features"] = _features(n)
            handle[f"market1501/{side}/names"] = np.array([r.path[6:] for r in records], dtype=h5py.string_dtype())
            handle[f"market1501/{side}/paths"] = np.array([r.path for r in records], dtype=h5py.string_dtype())
            handle[f"market1501/{side}/pids"] = np.array([r.pid for r in records])
            handle[f"market1501/{side}/camids"] = np.array([r.camid for r in records])
    file = read_features_file(path)
    assert file.format_version == 1
    (saved,) = read_test_sets(path)
    assert saved.name == "market1501" and len(saved.query) == 3 and saved.query_features.shape == (3, 5)


def _old_flat_file(path, ids: bool = True):
    """The layout `bpm extract` wrote before format_version: datasets at the file root."""
    names = [f"{i % 3 + 1:04d}_c1s1_{i:06d}_00.jpg" for i in range(4)]
    with h5py.File(path, "w") as handle:
        handle.attrs["images"] = "/data/cam_a"
        handle.attrs["weights"] = "/w.pth"
        handle["features"] = _features(4)
        handle["names"] = np.array(names, dtype=h5py.string_dtype())
        handle["paths"] = np.array([f"/data/cam_a/{n}" for n in names], dtype=h5py.string_dtype())
        if ids:
            handle["pids"] = np.array([i % 3 + 1 for i in range(4)])
            handle["camids"] = np.ones(4, dtype=np.int64)
    return names


@pytest.mark.parametrize("ids", [True, False])
def test_old_flat_extract_files_still_read_as_one_folder_split(tmp_path, ids):
    path = tmp_path / "flat.h5"
    names = _old_flat_file(path, ids)
    file = read_features_file(path)
    assert file.format_version == 1 and file.attrs["weights"] == "/w.pth"
    assert list(file.splits) == ["cam_a/images"]
    split = file.splits["cam_a/images"]
    assert split.names == names and np.array_equal(split.features, _features(4)) and split.has_ids == ids


def test_a_file_without_a_query_gallery_pair_is_one_line_saying_what_it_holds(tmp_path):
    path = tmp_path / "flat.h5"
    _old_flat_file(path)
    with pytest.raises(BpmError) as error:
        read_test_sets(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "'cam_a/images' (4 images)" in message and "'<set>/query' and '<set>/gallery'" in message


def test_a_pair_without_ids_is_refused_naming_the_group(tmp_path):
    path = tmp_path / "f.h5"
    split = FeatureSplit(_features(2), ["a.jpg", "b.jpg"], ["/a.jpg", "/b.jpg"])
    write_features_file(path, {"x/query": split, "x/gallery": split}, {})
    with pytest.raises(BpmError, match="/x/query lacks pids, camids"):
        read_test_sets(path)


def _newer_version(handle) -> None:
    handle.attrs["format_version"] = FORMAT_VERSION + 1


def _no_camids(handle) -> None:
    del handle["x/query/camids"]


@pytest.mark.parametrize("spoil,message", [(_newer_version, "format_version 3 is newer than this bpm reads"),
                                           (_no_camids, "/x/query lacks camids")])
def test_unreadable_files_are_one_line_naming_the_problem(tmp_path, spoil, message):
    path = tmp_path / "f.h5"
    save_features(path, _features(2), _records(2, 1), "x/query")
    with h5py.File(path, "a") as handle:
        spoil(handle)
    with pytest.raises(BpmError, match=message):
        read_features_file(path)


def test_normalised_reading_is_extractions_normalisation(tmp_path):
    path = tmp_path / "f.h5"
    save_features(path, _features(4) * 7, _records(4, 1), "x/query")
    save_features(path, _features(6, 1), _records(6, 2), "x/gallery")
    (saved,) = read_test_sets(path, normalize=True)
    assert np.array_equal(saved.query_features, F.normalize(torch.from_numpy(_features(4) * 7), dim=1).numpy())


def _file_with(tmp_path, attrs) -> str:
    path = tmp_path / "n.h5"
    write_features_file(path, {"toy/query": FeatureSplit.from_records(_features(2), _records(2, 1))}, attrs)
    return str(path)


@pytest.mark.parametrize("applied,model", [(0, 0), (1, 1), (0, 1)])
def test_evaluation_follows_the_models_test_time_normalisation(tmp_path, applied, model, capsys):
    path = _file_with(tmp_path, normalization_attrs(bool(applied), bool(model)))
    assert read_features_file(path).attrs == {"normalized": applied, "test_normalize": model}
    # Left out: normalise exactly when the model does and the stored features are not normalised yet.
    assert evaluation_normalization(path, None) is bool(model and not applied)
    assert capsys.readouterr().err == ""


def test_evaluation_warns_when_told_otherwise(tmp_path, capsys):
    bnneck = _file_with(tmp_path, normalization_attrs(True, True))
    assert evaluation_normalization(bnneck, True) is True and capsys.readouterr().err == ""
    assert evaluation_normalization(bnneck, False) is False  # stored normalised: false cannot undo it
    err = capsys.readouterr().err
    assert err.startswith("warning: --normalize_feature false") and "stored L2-normalised" in err
    assert err.count("\n") == 1
    plain = _file_with(tmp_path, normalization_attrs(False, False))
    assert evaluation_normalization(plain, True) is True
    err = capsys.readouterr().err
    assert "differs from the model's test-time normalisation" in err and "differ from bpm test's" in err
    older = _file_with(tmp_path, {})  # files written before the record: as told, else off
    assert evaluation_normalization(older, None) is False and evaluation_normalization(older, True) is True
    assert capsys.readouterr().err == ""
