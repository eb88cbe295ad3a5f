"""Every switch and output path checked before the first step; tracebacks and silent casts turned
into one-line errors; messages that name only what exists (issue #20 items 6, 8, 9 and 10)."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _runner import TALLY, cli_error, make_trainer, one_epoch

from bpm.cli import main
from bpm.data.datasets import build_dataset
from bpm.engine.checkpoint import atomic_torch_save, load_checkpoint
from bpm.errors import BpmError
from bpm.models.reid import build_model
from bpm.models.weights import load_model_weights, read_weights_file


# ----------------------------------------------------------------------------- items 6 and 8: switches
BAD_SWITCHES = [
    (("--trainset_part", "train", "--epochs_per_val", "0.5"), "--epochs_per_val"),
    (("--batch_size_test", "0"), "--batch_size_test"),
    (("--base_lr", "nan"), "--base_lr"),
    (("--base_lr", "-1"), "--base_lr"),
    (("--workers", "-1"), "--workers"),
    (("--resize_h_w", "(0, 0)"), "--resize_h_w"),
    (("--resize_h_w", "(1e9, 1)"), "--resize_h_w"),
    (("--margin", "-1"), "--margin"),
    (("--margin", "0"), "--margin"),
    (("--max_nonfinite_steps", "0"), "--max_nonfinite_steps"),
    (("--erase_prob", "1.5"), "--erase_prob"),
    (("--weight_decay", "inf"), "--weight_decay"),
]


@pytest.mark.parametrize("switches,flag", BAD_SWITCHES)
def test_bad_switch_values_are_one_line_before_any_work(tiny_world, tmp_path, capsys, switches, flag):
    TALLY.fault("bad switch value")
    line = cli_error(capsys, one_epoch(tiny_world, tmp_path / "exp", *switches))
    assert flag in line
    assert not (tmp_path / "exp").exists()  # refused before the experiment folder was made


def test_soft_margin_needs_no_margin(tiny_world, tmp_path):
    from bpm.cli.checks import check_train
    from train_helpers import train_args

    check_train(vars(train_args(tiny_world, tmp_path, "--soft_margin", "true", "--margin", "-1")))


@pytest.mark.parametrize("where", ["missing folder", "a folder", "not HDF5"])
def test_save_features_path_is_checked_before_training(tiny_world, tmp_path, capsys, where):
    target = {"missing folder": tmp_path / "absent" / "f.h5", "a folder": tmp_path, "not HDF5": tmp_path / "notes.h5"}[where]
    if where == "not HDF5":
        target.write_text("my notes")
    TALLY.fault("bad --save_features path")
    line = cli_error(capsys, one_epoch(tiny_world, tmp_path / "exp", "--save_features", str(target)))
    assert "--save_features" in line and str(target) in line
    assert not (tmp_path / "exp").exists()
    if where == "not HDF5":
        assert target.read_text() == "my notes"


# ----------------------------------------------------------------------------- item 6: EPERM on output
def test_eperm_on_results_is_one_line_saying_the_checkpoint_is_kept(tiny_world, tmp_path, capsys, monkeypatch):
    """``chattr +i results.json`` makes the final rename fail with EPERM (simulated: tests may not be root)."""
    real_replace = os.replace

    def immutable(src, dst, *args, **kwargs):
        if Path(dst).name == "results.json":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", immutable)
    TALLY.fault("EPERM on an output file")
    line = cli_error(capsys, one_epoch(tiny_world, tmp_path / "exp"))
    assert "results.json" in line and "Operation not permitted" in line
    assert load_checkpoint(tmp_path / "exp" / "ckpt.pth")["ep"] == 1  # the training is kept
    assert not list((tmp_path / "exp").glob(".results.json.*"))


def test_os_errors_of_commands_without_checkpoints_do_not_mention_one(tmp_path, capsys, monkeypatch):
    import bpm.commands.evaluate as evaluate

    features = tmp_path / "f.h5"
    _features_file(features)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "e" / "results.json"))

    monkeypatch.setattr(evaluate, "write_results", full_disk)
    TALLY.fault("disk full in a command that writes no checkpoint")
    line = cli_error(capsys, ["evaluate", "--features_file", str(features), "--rerank", "false",
                              "--exp_dir", str(tmp_path / "e")])
    assert "No space left" in line and "checkpoint" not in line


# ----------------------------------------------------------------------------- item 8: checkpoints
def _checkpoint(path: Path, **changes) -> Path:
    model = build_model("mobilenetV2")
    optimizer = torch.optim.Adam(model.parameters())
    ckpt = {"state_dicts": [model.state_dict(), optimizer.state_dict()], "ep": 1, "step": 0, "scores": {}}
    ckpt.update(changes)
    atomic_torch_save(ckpt, path)
    return path


MALFORMED = {
    "one entry": {"state_dicts": "ONE"},
    "empty": {"state_dicts": []},
    "a dict": {"state_dicts": {"model": {}}},
    "ep a string": {"ep": "3"},
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_checkpoints_are_one_line_for_resume_and_export(tiny_world, tmp_path, capsys, kind):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    changes = dict(MALFORMED[kind])
    if changes.get("state_dicts") == "ONE":
        changes["state_dicts"] = [build_model("mobilenetV2").state_dict()]
    path = _checkpoint(exp_dir / "ckpt.pth", **changes)
    before = path.read_bytes()
    TALLY.fault("malformed checkpoint")
    line = cli_error(capsys, one_epoch(tiny_world, exp_dir, "--resume", "true"))
    assert str(path) in line
    if kind in ("empty", "a dict"):  # model-only and string-ep checkpoints export fine (export needs the model only)
        line = cli_error(capsys, ["export", "--weights", str(path), "--out", str(tmp_path / "x"), "--formats", "pt"])
        assert str(path) in line
    assert path.read_bytes() == before and not (exp_dir / "config.json").exists()


# ----------------------------------------------------------------------------- item 8/9: features files
def _features_file(path: Path, **override) -> Path:
    n = 4
    data = {"features": np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32),
            "names": np.array([f"{i:04d}_c1.jpg" for i in range(n)], dtype=h5py.string_dtype()),
            "paths": np.array([f"/x/{i:04d}_c1.jpg" for i in range(n)], dtype=h5py.string_dtype()),
            "pids": np.array([1, 2, 1, 2]), "camids": np.array([1, 1, 2, 2])}
    with h5py.File(path, "w") as handle:
        for side in ("query", "gallery"):
            for key, value in {**data, **override}.items():
                handle.create_dataset(f"toy/{side}/{key}", data=value)
    return path


BAD_FEATURES = {
    "string pids": {"pids": np.array(["a", "b", "c", "d"], dtype=h5py.string_dtype())},
    "integer names": {"names": np.arange(4)},
    "scalar pids": {"pids": np.int64(3)},
    "string features": {"features": np.array(["x"] * 4, dtype=h5py.string_dtype())},
    "fractional pids": {"pids": np.array([0.5, 1, 2, 3])},
}


@pytest.mark.parametrize("kind", sorted(BAD_FEATURES))
def test_malformed_features_files_are_one_line(tmp_path, capsys, kind):
    path = _features_file(tmp_path / "f.h5", **BAD_FEATURES[kind])
    TALLY.fault("malformed features file")
    line = cli_error(capsys, ["evaluate", "--features_file", str(path), "--rerank", "false"])
    assert str(path) in line


def test_whole_float_pids_are_read_as_integers(tmp_path, capsys):
    path = _features_file(tmp_path / "f.h5", pids=np.array([1.0, 2.0, 1.0, 2.0]))
    assert main(["evaluate", "--features_file", str(path), "--rerank", "false"]) == 0


# ----------------------------------------------------------------------------- item 9: silent casts
@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_integer_or_bool_weights_are_refused(tmp_path, dtype):
    state = build_model("mobilenetV2").state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    state[key] = state[key].to(dtype)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    TALLY.fault("integer/bool weight tensor")
    with pytest.raises(BpmError, match=f"{key} is {str(dtype).replace('torch.', '')}"):
        load_model_weights(build_model("mobilenetV2"), path)


@pytest.mark.parametrize("name,accepted", [("-0007_c1s1_000001_00.jpg", False), ("\u0660\u0660\u0660\u0662_c1s1_01.jpg", False),
                                           ("0002_c\u0661s1_01.jpg", False), ("0002_c0s1_000001_00.jpg", True),
                                           ("-1_c1s1_000001_00.jpg", True)])
def test_odd_names(tiny_world, tmp_path, name, accepted):
    root = tmp_path / "world"
    shutil.copytree(tiny_world, root)
    shutil.copy(next((root / "bounding_box_test").iterdir()), root / "bounding_box_test" / name)
    TALLY.fault("odd image name")
    if accepted:
        build_dataset("market1501", root)
    else:
        with pytest.raises(BpmError) as raised:
            build_dataset("market1501", root)
        assert name in str(raised.value) and "\n" not in str(raised.value)


# ----------------------------------------------------------------------------- item 10: messages
def test_weights_path_to_a_device_is_not_called_missing(tmp_path):
    link = tmp_path / "w.pth"
    link.symlink_to("/dev/zero")
    TALLY.fault("weights path to a device")
    with pytest.raises(BpmError, match="not a regular file"):
        read_weights_file(link)


def test_nonfinite_stop_before_any_checkpoint_names_none(tiny_world, tmp_path):
    trainer = make_trainer(tiny_world, tmp_path, "--max_nonfinite_steps", "1")
    criterion = trainer.criterion
    trainer.criterion = lambda outputs, targets, gather=None: (lambda l, s: (l * float("nan"), s))(
        *criterion(outputs, targets, gather))
    TALLY.fault("non-finite stop before the first checkpoint")
    with pytest.raises(BpmError) as raised:
        trainer.fit()
    assert "no checkpoint was written yet" in str(raised.value) and "last good checkpoint" not in str(raised.value)


def test_export_into_an_unwritable_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """``chattr +i`` on the folder the export folder goes into: creating it fails with EPERM (simulated)."""
    model = build_model("mobilenetV2")
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "locked" / "export"
    real_mkdir = Path.mkdir

    def immutable(self, *args, **kwargs):
        if Path(self) == out:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", immutable)
    TALLY.fault("EPERM on an output file")
    line = cli_error(capsys, ["export", "--weights", str(weights), "--out", str(out), "--formats", "pt",
                              "--resize_h_w", "(64, 32)"])
    assert "Operation not permitted" in line and "checkpoint" not in line
    assert not out.exists()
