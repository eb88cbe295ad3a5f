"""Where a run's telemetry goes: console (mirrored to files), TensorBoard, and a JSON-lines log.

The JSON-lines file ``train_log.jsonl`` is what ``bpm plot`` reads. Every statistic the criterion
returns becomes a TensorBoard scalar of the same name; the original's names (``loss``,
``precision``, ``satisfy_margin``, ``average_distance``, ``val scores``) stay, so old dashboards
still work, all in one run (the ``tensorboard/`` folder). After the final test, the run's
hyper-parameters and test metrics go to TensorBoard's HParams view (:func:`log_hparams`).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class _Tee:
    """A stream that writes to the console and to a file."""

    def __init__(self, console: TextIO, file: TextIO) -> None:
        self.console = console
        self.file = file

    def write(self, text: str) -> int:
        self.console.write(text)
        self.file.write(text)
        self.file.flush()
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.file.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str):
        return getattr(self.console, name)


class StreamMirror:
    """While entered, mirror stdout/stderr into ``stdout_<time>.txt`` / ``stderr_<time>.txt`` (the original's file names).

    The streams are the process's, so only a command enters this, as a ``with`` block: they are
    the caller's again however the block ends. ``enabled=False`` mirrors nothing (``--log_to_file
    false``, or a rank other than the first).
    """

    def __init__(self, exp_dir: Path, enabled: bool = True) -> None:
        self.exp_dir = Path(exp_dir)
        self.enabled = enabled
        self._undo = contextlib.ExitStack()

    def __enter__(self) -> "StreamMirror":
        if self.enabled:
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
            with contextlib.ExitStack() as undo:
                out = undo.enter_context(open(self.exp_dir / f"stdout_{stamp}.txt", "a"))
                err = undo.enter_context(open(self.exp_dir / f"stderr_{stamp}.txt", "a"))
                undo.callback(_set_streams, sys.stdout, sys.stderr)  # runs before the files close
                _set_streams(_Tee(sys.stdout, out), _Tee(sys.stderr, err))
                self._undo = undo.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._undo.close()


def _set_streams(stdout: TextIO, stderr: TextIO) -> None:
    sys.stdout, sys.stderr = stdout, stderr


class RunLogger:
    """Scalars to TensorBoard (optional) and to ``train_log.jsonl`` (always)."""

    def __init__(self, exp_dir: Path, tensorboard: bool = True) -> None:
        self.jsonl = open(exp_dir / "train_log.jsonl", "a")
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(exp_dir / "tensorboard"))

    def log_step(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"kind": "step", "step": step, "epoch": epoch, **values}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for name, value in values.items():
                # The original's group "average_distance" keeps d_ap/d_an together, in this run (add_scalars
                # would have written one extra run per curve).
                tag = f"average_distance/{name}" if name in ("dist_ap", "dist_an") else name
                self.writer.add_scalar(tag, value, step)

    def log_validation(self, step: int, epoch: int, mAP: float, rank1: float) -> None:
        self.jsonl.write(json.dumps({"kind": "val", "step": step, "epoch": epoch, "mAP": mAP, "Rank1": rank1}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            self.writer.add_scalar("val scores/mAP", mAP, epoch)
            self.writer.add_scalar("val scores/Rank1", rank1, epoch)

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def log_hparams(exp_dir: Path, hparams: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
    """Hyper-parameters and final test metrics into the run's own TensorBoard folder.

    ``SummaryWriter.add_hparams`` would put them in a new sub-run named by the time; writing its
    summaries into the run's folder keeps one run per experiment. Values that TensorBoard cannot
    show (tuples, None) become text. Event files are named by the second and the host, so this
    writer takes its own suffix: opened within the training writer's second, it would otherwise
    truncate that file and lose every training scalar.
    """
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams as hparams_summaries

    clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparams.items()}
    with SummaryWriter(log_dir=str(Path(exp_dir) / "tensorboard"), filename_suffix=".hparams") as writer:
        for summary in hparams_summaries(clean, metrics):
            writer.file_writer.add_summary(summary)
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
