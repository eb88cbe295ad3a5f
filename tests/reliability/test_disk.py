"""Full disks and unwritable experiment folders.

Where the test runs as root and can mount, the disk is a real small tmpfs; everywhere else (and
always, in addition) ``ENOSPC`` is injected into the write. Either way: a run that cannot fit
its checkpoints is refused before training, and a write that fails mid-run leaves the last good
checkpoint intact and stops with one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from _runner import TALLY, make_trainer, train_switches

from bpm.cli import main
from bpm.engine import diskspace
from bpm.engine.checkpoint import atomic_torch_save, load_checkpoint
from bpm.errors import BpmError

MiB = 2**20


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int, read_only: bool = False):
    """Mount a tmpfs of ``size_mib`` at ``path`` for the block, or skip the test where that is not possible."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    options = f"size={size_mib}m" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _no_temp_files(folder: Path) -> bool:
    return not list(folder.glob(".ckpt.pth.*.tmp"))


# ----------------------------------------------------------------------------- atomic write
def test_enospc_in_the_middle_of_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dicts": [{"w": torch.ones(1000)}, {}], "ep": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_until_full(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)  # half of it reached the disk ...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ... then the disk was full

    monkeypatch.setattr(torch, "save", save_until_full)
    TALLY.fault("disk full (injected ENOSPC)")
    with pytest.raises(BpmError) as raised:
        atomic_torch_save({"state_dicts": [{"w": torch.zeros(1000)}, {}], "ep": 2}, path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert "No space left on device" in message and "previous one is intact" in message
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["ep"] == 1
    assert _no_temp_files(tmp_path)


def test_checkpoint_files_get_ordinary_permissions(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dicts": [{}, {}], "ep": 0}, path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_stale_temp_files_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    stale = tmp_path / ".ckpt.pth.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    atomic_torch_save({"state_dicts": [{}, {}], "ep": 0}, tmp_path / "ckpt.pth")
    assert not stale.exists()


# ----------------------------------------------------------------------------- before training
def test_too_little_free_space_is_refused_before_training(tiny_world, tmp_path, capsys, monkeypatch):
    exp_dir = tmp_path / "exp"
    real = shutil.disk_usage
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda p: real(p)._replace(free=20 * MiB))
    TALLY.fault("too little free space")
    line = cli_error(capsys, ["train", *train_switches(tiny_world, exp_dir)])
    assert str(exp_dir) in line and "only 20.0 MiB free" in line and "--exp_dir" in line
    assert not (exp_dir / "ckpt.pth").exists() and not (exp_dir / "train_log.jsonl").exists()


def test_small_tmpfs_is_refused_before_training(tiny_world, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", 24) as disk:
        TALLY.fault("too little free space (tmpfs)")
        line = cli_error(capsys, ["train", *train_switches(tiny_world, disk / "exp")])
        assert "free, but checkpoints need about" in line
        assert not (disk / "exp" / "ckpt.pth").exists()


def test_checkpoint_size_estimate_covers_the_optimizer_state_to_come(tiny_world, tmp_path):
    trainer = make_trainer(tiny_world, tmp_path, "--total_epochs", "1")
    estimate = diskspace.estimate_checkpoint_bytes(trainer.checkpoint_state(), trainer.optimizer)
    trainer.train_step(*next(iter(trainer.loader))[:2])
    actual = diskspace.serialized_size(trainer.checkpoint_state())
    assert actual * 0.99 <= estimate <= actual * 1.01


@pytest.mark.parametrize("how", ["below-a-file", "read-only-mount", "no-permission"])
def test_unwritable_exp_dir_is_one_line_before_training(tiny_world, tmp_path, capsys, how):
    with contextlib.ExitStack() as stack:
        if how == "below-a-file":
            (tmp_path / "file").write_text("not a folder")
            exp_dir = tmp_path / "file" / "exp"
        elif how == "read-only-mount":
            exp_dir = stack.enter_context(tmpfs(tmp_path / "ro", 1, read_only=True))
        else:
            if os.geteuid() == 0:
                pytest.skip("root ignores permission bits")
            exp_dir = tmp_path / "locked"
            exp_dir.mkdir(mode=0o555)
            stack.callback(exp_dir.chmod, 0o755)
        TALLY.fault(f"unwritable exp_dir ({how})")
        line = cli_error(capsys, ["train", *train_switches(tiny_world, exp_dir)])
    assert line.startswith(f"error: {exp_dir}: experiment folder is not writable") and "--exp_dir" in line


# ----------------------------------------------------------------------------- during training
def _fill(folder: Path, leave_bytes: int) -> Path:
    """Eat the free space of ``folder``'s file system, leaving ``leave_bytes``."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free - leave_bytes
    with open(filler, "wb") as handle:
        handle.truncate(0)
        chunk = b"\0" * MiB
        while free > 0:
            handle.write(chunk[: min(MiB, free)])
            free -= MiB
    return filler


@pytest.mark.parametrize("disk", ["injected", "tmpfs"])
def test_disk_full_mid_run_stops_with_last_good_checkpoint_then_resumes(tiny_world, tmp_path, monkeypatch, disk):
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(tmpfs(tmp_path / "disk", 96)) if disk == "tmpfs" else tmp_path
        exp_dir = root / "exp"
        exp_dir.mkdir()
        trainer = make_trainer(tiny_world, exp_dir, "--total_epochs", "1", "--ckpt_every_steps", "1")
        save = trainer.save_checkpoint
        saves = []

        def save_then_fill():
            if len(saves) == 2:  # the disk fills up after the second checkpoint
                if disk == "tmpfs":
                    _fill(root, leave_bytes=MiB)
                else:
                    monkeypatch.setattr(os, "fsync", _enospc)
            save()
            saves.append(trainer.position.global_step)

        trainer.save_checkpoint = save_then_fill
        TALLY.fault(f"disk full mid-run ({disk})")
        with pytest.raises(BpmError) as raised:
            trainer.fit()
        message = str(raised.value)
        assert "\n" not in message and "No space left on device" in message and "previous one is intact" in message
        monkeypatch.undo()
        assert saves == [1, 2]
        assert load_checkpoint(exp_dir / "ckpt.pth")["global_step"] == 2
        assert _no_temp_files(exp_dir)

        (root / "filler.bin").unlink(missing_ok=True)
        resumed = make_trainer(tiny_world, exp_dir, "--total_epochs", "1", "--ckpt_every_steps", "1")
        resumed.resume()
        TALLY.resumed_runs += 1
        resumed.fit()
        assert load_checkpoint(exp_dir / "ckpt.pth")["global_step"] == 4


def _enospc(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
