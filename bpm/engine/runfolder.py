"""One run per experiment folder: a lock file, fresh logs for a fresh run, and separate test records.

Why: two runs sharing an ``--exp_dir`` used to interleave — the second renamed the first's live
checkpoint, one's temp-file cleanup deleted the other's temp checkpoint, and ``config.json``,
``ckpt.pth`` and ``results.json`` ended up from different runs; a fresh run appended to the old
``train_log.jsonl`` (its plots then showed the old run's steps as its own); and ``bpm test`` into a
training folder overwrote the training run's ``config.json``.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from bpm.errors import BpmError

LOCK_NAME = ".bpm.lock"
RUN_LOG = "train_log.jsonl"
TENSORBOARD = "tensorboard"
# Files only a training run writes: a folder holding one is a training folder.
TRAINING_MARKERS = ("ckpt.pth", RUN_LOG)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """Exclusive ownership of ``exp_dir`` (``exp_dir/.bpm.lock`` holding the owner's pid and host).

    A lock whose process is dead on this host is stale (a SIGKILLed run) and is taken over; a lock
    held by a live process, or by another host (whose processes this one cannot see), is refused in
    one line. Use as a context manager; release removes the file only while it is still ours.
    """

    def __init__(self, exp_dir: str | Path, command: str = "bpm") -> None:
        self.path = Path(exp_dir) / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "command": command}
        self.held = False

    def acquire(self) -> "RunLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as exc:
                raise BpmError(f"{self.path}: cannot create the run's lock file ({exc.strerror or exc}); "
                               "choose another --exp_dir") from exc
            with os.fdopen(fd, "w") as handle:
                json.dump(self.owner, handle)
            self.held = True
            return self
        raise BpmError(f"{self.path}: could not take the experiment folder's lock (another run keeps taking it)")

    def _take_over_if_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError):
            owner = {}
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and host == self.owner["host"] and not _pid_alive(pid):
            try:
                self.path.unlink()  # stale: its process died without releasing it (SIGKILL, power loss)
            except FileNotFoundError:
                pass
            print(f"Taking over {self.path.parent}: its lock was left by process {pid}, which is gone")
            return
        who = f"process {pid} on {host}" if pid else "an unknown process (unreadable lock file)"
        raise BpmError(f"{self.path.parent}: experiment folder is in use by {who} since {owner.get('started', '?')} "
                       f"({owner.get('command', 'bpm')}); wait for it to finish or choose another --exp_dir "
                       f"(if that run is gone, delete {self.path})")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if owner.get("pid") == self.owner["pid"] and owner.get("host") == self.owner["host"]:
            try:
                self.path.unlink()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    print(f"warning: {self.path}: could not remove the lock file ({exc.strerror})")

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_training_folder(exp_dir: str | Path) -> bool:
    """True when ``exp_dir`` holds a training run's records (checkpoint or run log)."""
    return any((Path(exp_dir) / name).exists() for name in TRAINING_MARKERS)


def record_names(exp_dir: str | Path, training: bool) -> tuple[str, str]:
    """``(config file, results file)`` names for this command in ``exp_dir``.

    Training writes ``config.json``/``results.json``. A test, evaluation or re-evaluation in a
    training folder writes ``test_config.json``/``test_results.json`` so it never replaces the
    training run's records; in a folder of its own it keeps the usual names.
    """
    if training or not is_training_folder(exp_dir):
        return "config.json", "results.json"
    return "test_config.json", "test_results.json"


# A run's records (what a fresh run moves aside together): checkpoint, settings, results, logs, plots.
RECORD_NAMES = ("ckpt.pth", "config.json", "results.json", "test_config.json", "test_results.json", RUN_LOG,
                TENSORBOARD, "training_curves.png", "cmc_curve.png", "test_cmc_curve.png")
# The original's stdout/stderr mirrors, and the *.bak files of bpm versions that kept backups one by one.
RECORD_PATTERNS = ("stdout_*.txt", "stderr_*.txt", "*.bak")
PREVIOUS_PREFIX = "previous-"


def previous_records(exp_dir: str | Path) -> list[Path]:
    """The records of an earlier run in ``exp_dir`` (empty for a new folder)."""
    exp_dir = Path(exp_dir)
    found = [exp_dir / name for name in RECORD_NAMES if (exp_dir / name).exists()]
    return found + [p for pattern in RECORD_PATTERNS for p in sorted(exp_dir.glob(pattern)) if p not in found]


def move_previous_run(exp_dir: str | Path, stamp: str | None = None) -> Path | None:
    """Move an earlier run's records into one dated folder ``exp_dir/previous-<time>/``; its path, or
    None when there was nothing to move.

    Why together: moving only some of them (the checkpoint and the log as ``*.bak``) left the old
    ``results.json`` and ``test_results.json`` beside the new checkpoint, describing another model.
    Why move rather than refuse: a re-run in the same folder is what the original's scripts do, and
    nothing is lost this way. A failed move is undone, so the records are never split.
    """
    exp_dir = Path(exp_dir)
    records = previous_records(exp_dir)
    if not records:
        return None
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    target = exp_dir / f"{PREVIOUS_PREFIX}{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = exp_dir / f"{PREVIOUS_PREFIX}{stamp}-{suffix}"
    moved: list[Path] = []
    try:
        target.mkdir()
        for path in records:
            os.replace(path, target / path.name)
            moved.append(path)
    except OSError as exc:
        for path in moved:
            os.replace(target / path.name, path)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise BpmError(f"{exp_dir}: could not move the previous run's records into {target.name} "
                       f"({exc.strerror or exc}); they are unchanged") from exc
    return target
