"""Data folders are never replaced behind the user's back, and hostile files in them are bad images,
never a hang or a traceback (issue #20 items 1 and 7)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _runner import TALLY
from PIL import Image

from bpm.cli import main
from bpm.data.datasets import build_dataset
from bpm.data.images import find_unreadable, image_problem, read_image
from bpm.data.synthetic import WORLD_FILE, generate_world
from bpm.errors import BpmError
from train_helpers import TINY_WORLD


def cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def custom_world(tiny_world, tmp_path) -> Path:
    """A custom (non-default) world plus a file of the user's own in its folder."""
    root = tmp_path / "custom"
    shutil.copytree(tiny_world, root)
    (root / "notes.txt").write_text("mine")
    return root


# ----------------------------------------------------------------------------- item 1
def test_synthetic_dataset_reads_a_custom_world_as_it_is_and_never_redraws_it(custom_world):
    """A world drawn by ``bpm synth`` with other sizes is ours: read as drawn (Reliability III finding 10)."""
    before = snapshot(custom_world)
    TALLY.fault("custom synthetic world under --dataset synthetic")
    ds = build_dataset("synthetic", custom_world)
    assert ds.num_train_ids == json.loads((custom_world / WORLD_FILE).read_text())["config"]["num_train_ids"]
    assert snapshot(custom_world) == before
    assert sorted(p.name for p in custom_world.parent.iterdir()) == ["custom"]  # no temp folders either


def test_data_check_of_synthetic_never_writes(custom_world, tmp_path, capsys):
    before = snapshot(custom_world)
    TALLY.fault("custom synthetic world under data check")
    assert main(["data", "check", "--dataset", "synthetic", "--data_root", str(custom_world), "--names_only"]) == 0
    assert snapshot(custom_world) == before
    missing = tmp_path / "nothing_here"
    cli_error(capsys, ["data", "check", "--dataset", "synthetic", "--data_root", str(missing), "--names_only"])
    assert not missing.exists()


def test_synthetic_dataset_refuses_a_folder_of_other_files(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"not yours to delete")
    with pytest.raises(BpmError, match="nothing was changed"):
        build_dataset("synthetic", root)
    assert snapshot(root) == {"holiday.jpg": b"not yours to delete"}


def test_synthetic_world_is_drawn_into_an_empty_folder(tmp_path, monkeypatch):
    """The one case the command creates the data itself: nothing there yet (drawn small here)."""
    from bpm.data import synthetic

    monkeypatch.setattr(synthetic, "WorldConfig", lambda: TINY_WORLD)
    ds = build_dataset("synthetic", tmp_path / "new")
    assert ds.train and json.loads((tmp_path / "new" / WORLD_FILE).read_text())["config"]["seed"] == TINY_WORLD.seed
    assert build_dataset("synthetic", tmp_path / "new").train  # reused, not redrawn


# ----------------------------------------------------------------------------- item 7
@pytest.fixture
def bomb(tmp_path) -> Path:
    """A PNG declaring 20000x20000 pixels in a few kilobytes: a decompression bomb."""
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    assert path.stat().st_size < 200_000
    return path


def test_fifo_is_not_an_image_and_never_blocks(tmp_path):
    fifo = tmp_path / "0001_c1s1_000001_00.jpg"
    os.mkfifo(fifo)
    TALLY.fault("FIFO named *.jpg")
    with pytest.raises(BpmError, match="not a regular file"):
        read_image(str(fifo))  # would block forever on open() if it were opened
    assert "not a regular file" in image_problem(str(fifo))


def test_decompression_bomb_is_a_bad_image(bomb):
    TALLY.fault("decompression-bomb PNG")
    with pytest.raises(BpmError) as raised:
        read_image(str(bomb))
    assert "\n" not in str(raised.value) and str(bomb) in str(raised.value)
    assert find_unreadable([str(bomb)])[0][0] == str(bomb)


def _world_with(tiny_world: Path, tmp_path: Path, make) -> tuple[Path, Path]:
    root = tmp_path / "world"
    shutil.copytree(tiny_world, root)
    victim = sorted((root / "bounding_box_train").iterdir())[0]
    victim.unlink()
    make(victim)
    return root, victim


def test_data_check_and_training_treat_bombs_and_fifos_as_bad_images(tiny_world, tmp_path, capsys):
    for kind, make in (("bomb", lambda p: Image.new("1", (20000, 20000)).save(p, format="PNG")), ("fifo", os.mkfifo)):
        root, victim = _world_with(tiny_world, tmp_path / kind, make)
        assert main(["data", "check", "--dataset", "market1501", "--data_root", str(root), "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert [item["path"] for item in report["unreadable"]] == [str(victim)]
        ds = build_dataset("market1501", root, skip_bad_images=True)
        assert str(victim) not in {r.path for r in ds.train}


def test_bpm_synth_never_deletes_a_users_files_with_the_old_world(custom_world):
    """Even an explicit redraw (``bpm synth --out DIR`` with other flags, or ``--force``) keeps them."""
    import dataclasses

    before = snapshot(custom_world)
    TALLY.fault("redraw over a world holding a user's file")
    with pytest.raises(BpmError, match="notes.txt"):
        generate_world(custom_world, dataclasses.replace(TINY_WORLD, seed=99))
    assert snapshot(custom_world) == before


def test_training_on_a_bomb_stops_in_one_line_naming_it(tiny_world, tmp_path, capsys):
    from _runner import train_switches

    root, victim = _world_with(tiny_world, tmp_path, lambda p: Image.new("1", (20000, 20000)).save(p, format="PNG"))
    TALLY.fault("decompression-bomb PNG")
    line = cli_error(capsys, ["train", *train_switches(root, tmp_path / "exp", "--total_epochs", "1")])
    assert str(victim) in line
