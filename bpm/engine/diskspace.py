"""Refuse to start a run that could not save its work: unwritable folder or too little free space.

Both checks run before the first training step, so a user learns in seconds, not after an
epoch of hours, that the experiment folder is read-only or the disk too small. The free-space
check compares against the size the checkpoint WILL have: before the first step the optimizer
has no state yet (Adam's two moments per weight appear at step one), so serialising the current
state alone would underestimate it by two thirds.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from bpm.errors import BpmError

# Per-weight FP32 tensors an optimizer adds to its state once it has stepped.
_OPTIMIZER_SLOTS = {torch.optim.Adam: 2, torch.optim.AdamW: 2, torch.optim.SGD: 1}
# Room for the logs, results and TensorBoard files written next to the checkpoint.
LOG_MARGIN_BYTES = 16 * 2**20


class _ByteCounter:
    """A write-only sink that only counts, so sizing a checkpoint costs no memory or disk."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def serialized_size(obj: object) -> int:
    """Bytes ``torch.save(obj)`` would write."""
    counter = _ByteCounter()
    torch.save(obj, counter)
    return counter.size


def estimate_checkpoint_bytes(state: dict, optimizer: torch.optim.Optimizer) -> int:
    """Size of a checkpoint once training has stepped: ``state`` as it is now plus the optimizer's future state."""
    slots = next((n for kind, n in _OPTIMIZER_SLOTS.items() if type(optimizer) is kind), 2)
    if isinstance(optimizer, torch.optim.SGD) and not optimizer.defaults.get("momentum"):
        slots = 0
    missing = sum(
        slots * p.numel() * 4
        for group in optimizer.param_groups
        for p in group["params"]
        if p not in optimizer.state
    )
    return serialized_size(state) + missing


def prepare_exp_dir(exp_dir: str | Path) -> Path:
    """Create ``exp_dir`` and prove a file can be written there, or fail with one line naming it."""
    exp_dir = Path(exp_dir)
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=exp_dir):
            pass
    except OSError as exc:
        raise BpmError(
            f"{exp_dir}: experiment folder is not writable ({exc.strerror or exc}); choose another --exp_dir"
        ) from exc
    return exp_dir


def check_free_space(exp_dir: str | Path, checkpoint_bytes: int, checkpoint: Path | None = None) -> None:
    """Fail with one line unless ``exp_dir`` can hold two checkpoints (old + new during the atomic replace).

    An existing checkpoint at ``checkpoint`` already occupies its share, so it counts as free.
    """
    exp_dir = Path(exp_dir)
    free = shutil.disk_usage(exp_dir).free
    existing = checkpoint.stat().st_size if checkpoint is not None and checkpoint.is_file() else 0
    needed = 2 * checkpoint_bytes - existing + LOG_MARGIN_BYTES
    if free < needed:
        raise BpmError(
            f"{exp_dir}: only {_mb(free)} free, but checkpoints need about {_mb(needed)} "
            f"(each is {_mb(checkpoint_bytes)}; the old one is kept until the new one is complete); "
            "free some space or choose another --exp_dir"
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
