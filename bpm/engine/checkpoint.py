"""Atomic checkpoints and the RNG state they carry.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one, so a crash or a full disk at any moment leaves either the previous complete
checkpoint or the new complete one, never a torn file. The top-level keys keep the original's
names (``state_dicts`` = [model, optimizer], ``ep`` = next epoch, ``scores``) so its tools and
users still find what they expect; everything is loadable with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from bpm.errors import BpmError
from bpm.models.weights import checkpoint_model_state, read_weights_file

CKPT_NAME = "ckpt.pth"


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; a checkpoint gets the usual permissions
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None:
            reason = cause.strerror or cause
            raise BpmError(f"{path}: could not write checkpoint ({reason}); the previous one is intact") from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        # Left by a writer killed mid-save (SIGKILL, power loss): never loadable, only wasted space.
        stale.unlink(missing_ok=True)


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``, if any.

    On a full disk torch's zip writer fails again while closing and raises a RuntimeError
    ("unexpected pos ...") that hides the original ENOSPC in its context.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors/ints (safe for ``weights_only`` loading)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, torch.tensor(mt_state, dtype=torch.int64), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt_state.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint (ours or the original's), refusing anything else with one line."""
    ckpt = read_weights_file(path)
    if not isinstance(ckpt, dict) or "state_dicts" not in ckpt or "ep" not in ckpt:
        raise BpmError(f"{path}: not a training checkpoint (expected keys 'state_dicts' and 'ep')")
    checkpoint_model_state(ckpt, path)
    for key in ("ep", "step", "global_step"):
        value = ckpt.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BpmError(f"{path}: '{key}' must be a whole number >= 0, got {value!r}")
    return ckpt


def resumable_state_dicts(ckpt: dict, path: str | Path) -> tuple[dict, dict]:
    """The ``[model, optimizer]`` pair a resume needs, or one line naming the file."""
    state_dicts = ckpt["state_dicts"]
    if len(state_dicts) < 2 or not isinstance(state_dicts[1], dict):
        raise BpmError(f"{path}: 'state_dicts' holds no optimizer state (expected [model, optimizer]); it can be "
                       "evaluated or exported but not resumed - train afresh from it with --net_pretrained_path")
    return state_dicts[0], state_dicts[1]
