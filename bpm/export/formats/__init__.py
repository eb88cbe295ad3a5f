"""Export formats as registered entries: what ``bpm export --formats`` accepts and how each is made and checked.

Why a registry: the pipeline (``bpm.export.pipeline``) writes, reloads, checks and settles every
format the same way; only what differs per format lives in its entry, next to its writer (one
module per family in this package). A new format is one new module that decorates its writer
with :func:`export_format`, plus its test::

    @export_format("onnx", "{stem}_fp32.onnx", opens=open_onnx, stamp=stamp_verification)
    def write_onnx(ctx: ExportContext, path: Path) -> None:
        shutil.copyfile(ctx.fp32_onnx(), path)

A format's file is written to a hidden staged name, opened by its ``opens`` (which says at what
precision it computes and gives its features), compared with the PyTorch FP32 features (cosine;
mAP too where ``retrieval``), and only then moved to its final name (or aside as ``*.refused``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from bpm.export.onnx import OnnxSpec, export_onnx
from bpm.export.options import ExportOptions, ImageSets
from bpm.export.verify import FormatCheck
from bpm.registry import Registry



@dataclass
class ExportContext:
    """What every writer may use: the loaded model, the options, the graph spec, the images."""

    model: torch.nn.Module
    opts: ExportOptions
    spec: OnnxSpec
    meta: dict
    images: ImageSets
    reference: np.ndarray  # PyTorch FP32 features of images.verification
    tmp: Path
    log: Callable[[str], None]
    #: Extra sections of export_report.json, by writers (``int8``, ``openvino``, ...).
    notes: dict = field(default_factory=dict)
    #: The fine-tuned INT8 QDQ graph ``onnx_int8`` wrote (a copy under ``tmp``), once it has: every
    #: layer in 8 bits on the grid fine-tuning learned, which ``openvino_int8`` reads before trying NNCF.
    fine_tuned_int8: Path | None = None
    _fp32_onnx: Path | None = None

    def fp32_onnx(self) -> Path:
        """The FP32 ONNX graph every graph format is made from (exported once, on first use)."""
        if self._fp32_onnx is None:
            self._fp32_onnx = export_onnx(self.model, self.tmp / "source_fp32.onnx", self.spec, self.opts.opset)
        return self._fp32_onnx


@dataclass
class Opened:
    """A written file, loaded the way its users will load it: the precision it computes at (a key
    of :data:`bpm.export.verify.COSINE_THRESHOLDS`) and its features for image paths."""

    precision: str
    features: Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class ExportFormat:
    """One ``--formats`` value.

    Args:
        name: the ``--formats`` value.
        file_name: final file name, formatted with ``stem`` and ``weights_precision`` (``fp32``/``fp16``
            by ``--opt-level``).
        write: writes the file at the (staged) path it is given.
        opens: loads the written file for its check.
        retrieval: also scored by mAP/rank-1 on the test set when a dataset is given.
        needs_calibration: needs calibration images (``--dataset`` or ``--calib_images``).
        default: part of the default ``--formats``.
        companions: suffixes of files that belong to the main file and travel with it (an IR's ``.bin``).
        stamp: records the verdict in the file (``path, status, detail``), where the format can hold it.
        retry: the format's next, costlier route when its file failed the check: writes another file at
            the path it is given and returns True, or returns False when it has none left. The pipeline
            checks each new file the same way; the routes run in a fixed order and the first to pass is
            kept, so the check is a gate here, never a score to pick the best of several files by.
        help: one line for ``--help`` and the docs.
    """

    name: str
    file_name: str
    write: Callable[[ExportContext, Path], None]
    opens: Callable[[ExportContext, Path], Opened]
    retrieval: bool = True
    needs_calibration: bool = False
    default: bool = True
    companions: tuple[str, ...] = ()
    stamp: Callable[[Path, str, str], None] | None = None
    retry: Callable[[ExportContext, Path, FormatCheck], bool] | None = None
    help: str = ""

    def files(self, path: Path) -> list[Path]:
        """The file and its companions."""
        return [path, *(path.with_suffix(s) for s in self.companions)]


EXPORT_FORMATS: Registry[ExportFormat] = Registry(
    "export format", flag="--formats",
    package=("bpm.export.formats.weights", "bpm.export.formats.onnx", "bpm.export.formats.openvino"))


def export_format(name: str, file_name: str, *, opens: Callable[[ExportContext, Path], Opened],
                  **details) -> Callable[[Callable[[ExportContext, Path], None]], Callable[[ExportContext, Path], None]]:
    """Decorator: register the decorated writer as the export format ``name`` (see :class:`ExportFormat`)."""
    def decorate(write: Callable[[ExportContext, Path], None]) -> Callable[[ExportContext, Path], None]:
        EXPORT_FORMATS.add(name, ExportFormat(name, file_name, write, opens, **details), module=write.__module__)
        return write

    return decorate


def default_formats() -> tuple[str, ...]:
    """The formats ``bpm export`` writes when ``--formats`` is not given."""
    return tuple(n for n in EXPORT_FORMATS.names() if EXPORT_FORMATS.get(n).default)
