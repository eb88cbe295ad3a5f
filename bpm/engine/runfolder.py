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


def start_fresh_logs(exp_dir: str | Path, stamp: str | None = None) -> list[Path]:
    """A fresh (not resumed) run keeps the previous run's log and TensorBoard folder as ``*.<time>.bak``
    instead of appending to them; returns the backups made."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    kept = []
    for name in (RUN_LOG, TENSORBOARD):
        old = Path(exp_dir) / name
        if old.exists():
            backup = old.with_name(f"{name}.{stamp}.bak")
            os.replace(old, backup)
            kept.append(backup)
    return kept
