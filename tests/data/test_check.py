"""``bpm data check`` and the image decoding helpers."""
from __future__ import annotations

import json

import pytest
from dataset_fakes import make_market, write_jpeg

from bpm.cli import main
from bpm.data.images import find_unreadable, read_image
from bpm.errors import BpmError


def test_check_json_statistics(tmp_path, capsys):
    root = make_market(tmp_path / "market1501")
    assert main(["data", "check", "--dataset", "market1501", "--data_root", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {k: stats[k] for k in ("num_train_ids", "num_train_images", "num_query", "num_gallery", "num_cameras")} == {
        "num_train_ids": 10,
        "num_train_images": 40,
        "num_query": 3,
        "num_gallery": 7,
        "num_cameras": 4,
    }
    assert stats["num_multi_query"] == 3 and stats["num_junk"] == 3 and stats["num_distractors"] == 2
    assert stats["num_unreadable"] == 0


def test_check_lists_every_unreadable_image(tmp_path, capsys):
    root = make_market(tmp_path / "m")
    bad = sorted((root / "query").iterdir())
    bad[0].write_bytes(bad[0].read_bytes()[:150])
    bad[1].write_bytes(b"not an image")
    assert main(["data", "check", "--dataset", "market1501", "--data_root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "unreadable 2 images" in out and bad[0].name in out and bad[1].name in out
    assert "train     10 ids, 40 images" in out


def test_check_wrong_root_is_one_line_error(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "duke", "--data_root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing" in err and "\n" not in err


def test_read_image_truncated_jpeg_names_the_file(tmp_path):
    path = write_jpeg(tmp_path / "0001_c1s1_000001_00.jpg", size=(64, 128))
    assert read_image(str(path)).size == (64, 128)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(BpmError) as err:
        read_image(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert [p for p, _ in find_unreadable([str(path)])] == [str(path)]
