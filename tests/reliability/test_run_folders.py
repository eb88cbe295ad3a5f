"""Nothing silently replaced or mixed (issue #20 items 2-4): features files are written whole,
an experiment folder belongs to one run at a time, test records never replace training records,
and a resume refuses or applies changed switches instead of ignoring them."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
from _runner import TALLY, cli_error, one_epoch, train_switches

from bpm.cli import main
from bpm.engine.checkpoint import load_checkpoint
from bpm.engine.runfolder import LOCK_NAME, RunLock
from bpm.errors import BpmError


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory) -> Path:
    """A finished one-epoch training folder (checkpoint, run log, config.json, results.json)."""
    exp_dir = tmp_path_factory.mktemp("run") / "exp"
    assert main(one_epoch(tiny_world, exp_dir)) == 0
    return exp_dir


def copy_run(trained: Path, tmp_path: Path) -> Path:
    target = tmp_path / "exp"
    shutil.copytree(trained, target)
    return target


# ----------------------------------------------------------------------------- item 2
def test_save_features_replaces_an_older_file_whole_and_records_the_model(tiny_world, trained, tmp_path, capsys):
    features = tmp_path / "feats.h5"
    with h5py.File(features, "w") as handle:  # an earlier model's file, with a test set this run lacks
        handle.create_dataset("old_set/query/features", data=np.zeros((2, 4), np.float32))
    TALLY.fault("--save_features over an older features file")
    weights = trained / "ckpt.pth"
    assert main(["test", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--rerank", "false",
                 "--model_weight_file", str(weights), "--exp_dir", str(tmp_path / "t"), "--workers", "0",
                 "--save_features", str(features)]) == 0
    with h5py.File(features, "r") as handle:
        assert list(handle) == ["market1501"]
        assert handle.attrs["weights"] == str(weights.resolve()) and handle.attrs["net"] == "mobilenet_v2"
        assert handle.attrs["exp_dir"] == str((tmp_path / "t").resolve()) and handle.attrs["created"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_extract_writes_a_new_file_with_its_source(tiny_world, trained, tmp_path):
    out = tmp_path / "folder.h5"
    with h5py.File(out, "w") as handle:
        handle.create_dataset("stale", data=np.zeros(3))
    assert main(["extract", "--weights", str(trained / "ckpt.pth"), "--images", str(tiny_world / "query"),
                 "--out", str(out), "--resize_h_w", "(64, 32)"]) == 0
    with h5py.File(out, "r") as handle:
        assert "stale" not in handle and handle.attrs["weights"] == str((trained / "ckpt.pth").resolve())


# ----------------------------------------------------------------------------- item 3
# A fresh run in a used folder: tests/reliability/test_run_records.py (records moved aside together).


def test_a_live_lock_refuses_a_second_run_in_one_line_touching_nothing(tiny_world, trained, tmp_path, capsys):
    exp_dir = copy_run(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in exp_dir.iterdir() if p.is_file()}
    (exp_dir / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                 "started": "now", "command": "bpm train"}))
    TALLY.fault("second run on a live experiment folder")
    for argv in (one_epoch(tiny_world, exp_dir), one_epoch(tiny_world, exp_dir, "--resume", "true")):
        line = cli_error(capsys, argv)
        assert f"in use by process {os.getppid()}" in line and str(exp_dir) in line
    after = {p.name: p.read_bytes() for p in exp_dir.iterdir() if p.is_file()}
    assert after == {**before, LOCK_NAME: after[LOCK_NAME]} and len(after) == len(before) + 1


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    TALLY.fault("stale lock of a killed run")
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(BpmError, match="in use by process"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": "another-host"}))
    with pytest.raises(BpmError, match="another-host"):  # another host's pid cannot be checked from here
        RunLock(tmp_path).acquire()


def test_test_and_evaluate_never_replace_training_records(tiny_world, trained, tmp_path):
    exp_dir = copy_run(trained, tmp_path)
    config, results = (exp_dir / "config.json").read_bytes(), (exp_dir / "results.json").read_bytes()
    plots = {name: (exp_dir / name).read_bytes() for name in ("cmc_curve.png", "training_curves.png")}
    TALLY.fault("bpm test into a training folder")
    features = tmp_path / "f.h5"
    assert main(["test", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--rerank", "false",
                 "--exp_dir", str(exp_dir), "--workers", "0", "--save_features", str(features)]) == 0
    assert main(["evaluate", "--features_file", str(features), "--rerank", "false", "--exp_dir", str(exp_dir)]) == 0
    assert (exp_dir / "config.json").read_bytes() == config and (exp_dir / "results.json").read_bytes() == results
    assert {name: (exp_dir / name).read_bytes() for name in plots} == plots
    assert (exp_dir / "test_cmc_curve.png").is_file()
    assert json.loads((exp_dir / "test_config.json").read_text())["only_test"] is True
    assert json.loads((exp_dir / "test_results.json").read_text())["mAP"] >= 0


# ----------------------------------------------------------------------------- item 4
def test_resume_applies_a_changed_weight_decay_and_says_so(tiny_world, tmp_path, capsys):
    exp_dir = tmp_path / "exp"
    assert main(one_epoch(tiny_world, exp_dir)) == 0
    capsys.readouterr()
    TALLY.fault("resume with a changed switch")
    argv = ["train", *train_switches(tiny_world, exp_dir, "--total_epochs", "2", "--resume", "true",
                                     "--weight_decay", "0")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "weight_decay 0.0005 -> 0.0" in out
    ckpt = load_checkpoint(exp_dir / "ckpt.pth")
    assert all(group["weight_decay"] == 0.0 for group in ckpt["state_dicts"][1]["param_groups"])
    assert ckpt["train_config"]["weight_decay"] == 0.0
    changes = json.loads((exp_dir / "config.json").read_text())["resume_changes"]
    assert [c for c in changes if c.startswith("weight_decay 0.0005 -> 0.0 (from step ")]


@pytest.mark.parametrize("change", [("--optimizer", "sgd"), ("--ids_per_batch", "2"), ("--resize_h_w", "(32, 16)"),
                                    ("--neck", "bnneck"), ("--id_loss_weight", "1")])
def test_resume_refuses_incompatible_switches_before_touching_anything(tiny_world, trained, tmp_path, capsys, change):
    exp_dir = copy_run(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in exp_dir.iterdir() if p.is_file()}
    TALLY.fault("resume with an incompatible switch")
    line = cli_error(capsys, ["train", *train_switches(tiny_world, exp_dir, "--total_epochs", "2", "--resume", "true",
                                                       *change)])
    assert "--resume true with switches" in line and change[0].lstrip("-") in line
    assert {p.name: p.read_bytes() for p in exp_dir.iterdir() if p.is_file()} == before


def test_resume_without_resize_takes_the_checkpoints_input_size(tiny_world, trained, tmp_path, capsys):
    exp_dir = copy_run(trained, tmp_path)
    switches = train_switches(tiny_world, exp_dir, "--total_epochs", "2", "--resume", "true")
    at = switches.index("--resize_h_w")
    del switches[at:at + 2]  # trained at 64x32; the user does not retype it
    assert main(["train", *switches]) == 0
    assert json.loads((exp_dir / "config.json").read_text())["resize_h_w"] == [64, 32]
    assert load_checkpoint(exp_dir / "ckpt.pth")["ep"] == 2
