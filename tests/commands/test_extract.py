"""`bpm extract` writes the one features file: a query/gallery folder is evaluable by `bpm evaluate`
and drawable by `bpm visualize`, exactly as `bpm test --save_features` of the same folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bpm.cli import main
from bpm.evaluation.folder_features import extract_folder
from bpm.evaluation.features_file import read_features_file
from bpm.models.reid import build_model

FAST = ["-d", "()", "--resize_h_w", "(64, 32)"]


class FakeExtractor:
    """Features from the file names (pid, camera, index): no model needed to test the file."""

    def __call__(self, paths: list[str]) -> np.ndarray:
        rows = [[int(Path(p).name[:4]), int(Path(p).name.split("_c")[1][0]), i] for i, p in enumerate(paths)]
        return np.array(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def test_folder(tiny_world, tmp_path_factory) -> Path:
    """The layout `--dataset folder` reads: query/ and gallery/ (junk boxes included)."""
    folder = tmp_path_factory.mktemp("extract") / "cams"
    shutil.copytree(tiny_world / "query", folder / "query")
    shutil.copytree(tiny_world / "bounding_box_test", folder / "gallery")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mobilenetV2.pth"
    torch.manual_seed(0)
    torch.save(build_model("mobilenetV2").state_dict(), path)
    return path


def test_a_query_gallery_folder_becomes_an_evaluable_test_set(test_folder, tmp_path, capsys):
    out = tmp_path / "f.h5"
    extract_folder(FakeExtractor(), test_folder, out, {"command": "bpm extract"})
    file = read_features_file(out)
    assert sorted(file.splits) == ["cams/gallery", "cams/query"] and file.attrs["images"] == str(test_folder)
    gallery = file.splits["cams/gallery"]
    assert gallery.has_ids and (gallery.pids >= 0).all()  # junk boxes left out, as --dataset folder does
    assert main(["evaluate", "--features_file", str(out), "--rerank", "false"]) == 0
    assert "Test set cams:" in capsys.readouterr().out
    assert main(["visualize", "--features_file", str(out), "--num_queries", "2", "--rank_list_size", "3",
                 "--exp_dir", str(tmp_path / "vis"), "--log_to_file", "false"]) == 0
    assert len(list((tmp_path / "vis/rank_lists").glob("*.jpg"))) == 2


def test_a_plain_folder_is_one_split_and_evaluate_says_what_is_missing(test_folder, tmp_path, capsys):
    out = tmp_path / "q.h5"
    features, names = extract_folder(FakeExtractor(), test_folder / "query", out)
    assert list(read_features_file(out).splits) == ["query/images"] and len(names) == len(features)
    for command in (["evaluate", "--features_file", str(out)],
                    ["visualize", "--features_file", str(out), "--log_to_file", "false",
                     "--exp_dir", str(tmp_path / "vis")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --features_file") and "\n" not in err and str(out) in err
        assert f"'query/images' ({len(names)} images)" in err and "'<set>/query' and '<set>/gallery'" in err


def test_an_old_flat_extract_file_still_reads(tmp_path, capsys):
    out = tmp_path / "old.h5"
    with h5py.File(out, "w") as handle:  # `bpm extract` before the one format: datasets at the root
        handle["features"] = np.ones((2, 3), np.float32)
        handle["names"] = np.array(["a.jpg", "b.jpg"], dtype=h5py.string_dtype())
        handle["paths"] = np.array(["/x/a.jpg", "/x/b.jpg"], dtype=h5py.string_dtype())
    assert main(["evaluate", "--features_file", str(out)]) == 2
    assert "'old/images' (2 images)" in capsys.readouterr().err


def test_extract_of_a_test_folder_equals_bpm_test_save_features(test_folder, weights, tmp_path, capsys):
    by_test, by_extract = tmp_path / "test.h5", tmp_path / "extract.h5"
    assert main(["test", *FAST, "--dataset", "folder", "--data_root", str(test_folder), "--net", "mobilenetV2",
                 "--model_weight_file", str(weights), "--workers", "0", "--batch_size_test", "8", "--rerank", "false",
                 "--log_to_file", "false", "--exp_dir", str(tmp_path / "exp"), "--save_features", str(by_test)]) == 0
    assert main(["extract", *FAST, "--weights", str(weights), "--images", str(test_folder), "--out", str(by_extract),
                 "--batch_size", "8"]) == 0
    tested, extracted = read_features_file(by_test), read_features_file(by_extract)
    assert extracted.attrs["command"] == "bpm extract" and extracted.format_version == tested.format_version == 2
    for side in ("query", "gallery"):
        a, b = tested.splits[f"folder/{side}"], extracted.splits[f"cams/{side}"]
        assert a.paths == b.paths and np.array_equal(a.pids, b.pids) and np.array_equal(a.camids, b.camids)
        assert np.array_equal(a.features, b.features)
    capsys.readouterr()
    assert main(["evaluate", "--features_file", str(by_extract), "--rerank", "false",
                 "--exp_dir", str(tmp_path / "e")]) == 0
    results = json.loads((tmp_path / "e/results.json").read_text())
    assert results["mAP"] == json.loads((tmp_path / "exp/results.json").read_text())["mAP"]


def test_market_ids_follow_the_dataset_readers_name_rule():
    from bpm.evaluation.folder_features import market_ids

    pids, camids = market_ids(["0002_c1s1_000451_03.jpg", "-1_c3s2_000001_01.jpg", "0000_c6s1_000002_00.jpg"])
    assert pids.tolist() == [2, -1, 0] and camids.tolist() == [1, 3, 6]
    assert market_ids(["0002_c1s1_000451_03.jpg", "holiday.jpg"]) is None
    assert market_ids(["-0007_c1s1_000001_00.jpg"]) is None  # a negative id other than junk is not Market's
    assert market_ids(["\u0660\u0660\u0660\u0662_c1s1_000001_00.jpg"]) is None  # Arabic-Indic digits are not ids
    assert market_ids([]) is None


# ----------------------------------------------------------------------------- Reliability III finding 10
def test_skip_bad_images_leaves_a_zero_byte_file_out(test_folder, weights, tmp_path, capsys):
    folder = tmp_path / "imgs"
    shutil.copytree(test_folder / "query", folder)
    good = sorted(p.name for p in folder.iterdir())
    (folder / "0001_c1s1_999999_00.jpg").write_bytes(b"")  # a zero-byte file among good images
    out = tmp_path / "f.h5"
    argv = ["extract", *FAST, "--weights", str(weights), "--images", str(folder), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "0001_c1s1_999999_00.jpg" in err and "--skip_bad_images true" in err
    assert not out.exists()
    assert main([*argv, "--skip_bad_images", "true"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable image" in captured.out + captured.err
    assert read_features_file(out).splits["imgs/images"].names == good


def test_mat_of_a_query_gallery_folder_says_what_to_do(test_folder, weights, tmp_path, capsys):
    assert main(["extract", *FAST, "--weights", str(weights), "--images", str(test_folder),
                 "--out", str(tmp_path / "x.mat")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "query/ and gallery/" in err and ".h5" in err and "no images" not in err


def test_extract_takes_the_feature_group_of_bpm_test_and_threads_means_what_it_means_in_export():
    from bpm.commands import export as export_command
    from bpm.commands import extract as extract_command
    from bpm.cli.helpformat import make_parser

    parsers = {}
    for name, module in (("extract", extract_command), ("export", export_command)):
        parsers[name] = make_parser(f"bpm {name}", "")
        module.add_arguments(parsers[name])
    extract = parsers["extract"]
    args = extract.parse_args(["--weights", "w", "--images", "i", "--out", "o.h5", "--batch_size", "8",
                               "--test_flip", "true"])
    assert args.batch_size_test == 8 and args.test_flip is True and args.normalize_feature is None
    assert extract.parse_args(["--weights", "w", "--images", "i", "--out", "o.h5"]).batch_size_test == 32
    helps = {name: next(a.help for a in p._actions if a.dest == "threads") for name, p in parsers.items()}
    assert helps["extract"] == helps["export"] and "PyTorch" in helps["export"] and "ONNX Runtime" in helps["export"]
