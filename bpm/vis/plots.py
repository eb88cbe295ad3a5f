"""PNG plots of a run: training curves from ``train_log.jsonl`` and the CMC curve after evaluation.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global state), so plotting works on headless servers and inside training processes.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from bpm.errors import BpmError

RUN_LOG = "train_log.jsonl"
CURVES_PNG = "training_curves.png"
CMC_PNG = "cmc_curve.png"

# (panel title, [(log key, label)], logarithmic y axis)
_STEP_PANELS = [
    ("loss", [("loss", "loss")], False),
    ("batch statistics", [("precision", "precision (d_an > d_ap)"), ("satisfy_margin", "satisfy margin")], False),
    ("average distance", [("dist_ap", "d_ap"), ("dist_an", "d_an")], False),
    ("learning rate", [("lr", "lr")], True),
    ("loss scale", [("loss_scale", "loss scale")], True),
]
_META_KEYS = {"kind", "step", "epoch"}
_TITLES = {"single_query": "single query", "multi_query": "multi query",
           "reranked_single_query": "re-ranked single query", "reranked_multi_query": "re-ranked multi query"}


def read_run_log(path: Path) -> tuple[list[dict], list[dict]]:
    """Step and validation records of a run log, in step order.

    A resumed run appends to the same file and repeats the steps after its last checkpoint;
    the later record of a step (or of a validated epoch) wins, so curves never fold back.
    """
    if not path.is_file():
        raise BpmError(f"{path}: no run log (written by `bpm train`; expected {RUN_LOG} in the experiment folder)")
    steps: dict[int, dict] = {}
    vals: dict[int, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind, step = record["kind"], int(record["step"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BpmError(f"{path}:{number}: not a run-log line ({exc.__class__.__name__}: {exc})") from exc
            if kind == "step":
                steps[step] = record
            elif kind == "val":
                vals[int(record.get("epoch", step))] = record
    return [steps[s] for s in sorted(steps)], [vals[e] for e in sorted(vals)]


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]
    points = [(s, v) for s, v in points if math.isfinite(v)]
    if not points:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*points)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_training_curves(exp_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``training_curves.png`` (loss, precision/satisfy-margin, d_ap/d_an, lr, loss scale
    when logged, validation mAP/Rank-1) from ``exp_dir/train_log.jsonl``; returns the PNG path."""
    exp_dir = Path(exp_dir)
    steps, vals = read_run_log(exp_dir / RUN_LOG)
    if not steps and not vals:
        raise BpmError(f"{exp_dir / RUN_LOG}: the run log holds no step or validation records yet")
    known = {key for _title, keys, _log in _STEP_PANELS for key, _label in keys}
    # Statistics of other criteria (ID loss, accuracy, centre loss, ...) get a panel each.
    others = sorted({k for r in steps for k, v in r.items()
                     if k not in known | _META_KEYS and isinstance(v, (int, float))})
    panels = [(title, [(label, *_series(steps, key)) for key, label in keys], log_y)
              for title, keys, log_y in [*_STEP_PANELS, *((k.replace("_", " "), [(k, k)], False) for k in others)]]
    panels = [p for p in panels if any(x.size for _label, x, _y in p[1])]
    # Without loss scaling (O0, bfloat16) the logged scale is a constant 1: not worth a panel.
    panels = [p for p in panels if p[0] != "loss scale" or any((y != 1.0).any() for _l, _x, y in p[1])]
    columns = 3
    rows = math.ceil((len(panels) + 1) / columns)
    figure = _new_figure(5 * columns, 3.6 * rows)
    for index, (title, lines, log_y) in enumerate(panels, start=1):
        axes = figure.add_subplot(rows, columns, index)
        for label, x, y in lines:
            if x.size:
                axes.plot(x, y, label=label, linewidth=1)
        if log_y and all((y > 0).all() for _l, _x, y in lines):
            axes.set_yscale("log")
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.grid(True, alpha=0.3)
        if len(lines) > 1:
            axes.legend(fontsize="small")
    axes = figure.add_subplot(rows, columns, len(panels) + 1)
    axes.set_title("validation")
    if vals:
        epochs = [int(v["epoch"]) for v in vals]
        axes.plot(epochs, [100 * float(v["mAP"]) for v in vals], marker="o", label="mAP")
        axes.plot(epochs, [100 * float(v["Rank1"]) for v in vals], marker="o", label="Rank-1")
        axes.set_xlabel("epoch")
        axes.set_ylabel("%")
        axes.legend(fontsize="small")
        axes.grid(True, alpha=0.3)
    else:
        axes.text(0.5, 0.5, "no validation in this run\n(--trainset_part train, --epochs_per_val)",
                  ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    figure.suptitle(f"training curves: {exp_dir.name}")
    figure.tight_layout()
    path = Path(out) if out else exp_dir / CURVES_PNG
    figure.savefig(path, format="png")
    return path


def plot_cmc_curves(reports: Mapping[str, Mapping[str, Mapping]], path: str | Path) -> Path:
    """Write the CMC curve of every test set and protocol (``reports`` as returned by
    :func:`bpm.engine.evaluator.evaluate_model`: test set -> protocol -> result with ``cmc``)."""
    figure = _new_figure(7, 5)
    axes = figure.add_subplot(1, 1, 1)
    drawn = 0
    for test_set, report in reports.items():
        for protocol, result in report.items():
            cmc = np.asarray(result.get("cmc", []), dtype=float)
            if cmc.size == 0:
                continue
            ranks = np.arange(1, cmc.size + 1)
            label = f"{test_set} {_TITLES.get(protocol, protocol)} (R1 {cmc[0]:.1%}, mAP {float(result['mAP']):.1%})"
            axes.plot(ranks, 100 * cmc, label=label, linewidth=1.2)
            drawn += 1
    if not drawn:
        raise BpmError("CMC plot: the evaluation reports hold no CMC arrays")
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_title("CMC")
    axes.set_xlim(1, None)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def write_run_plots(exp_dir: str | Path, reports: Mapping[str, Mapping[str, Mapping]] | None = None,
                    cmc_name: str = CMC_PNG, training: bool = True) -> list[Path]:
    """After ``bpm train``/``bpm test``: the CMC curve, and the training curves when the run trained.

    Plots are a convenience: a failure here (a missing font, a full disk) is reported as a
    warning and never turns a finished training run into a failed one. A test in a training
    folder passes ``cmc_name="test_cmc_curve.png"``, ``training=False``: the training run's
    plots stay its own.
    """
    exp_dir = Path(exp_dir)
    written = []
    jobs = []
    if reports:
        jobs.append(lambda: plot_cmc_curves(reports, exp_dir / cmc_name))
    if training and (exp_dir / RUN_LOG).is_file():
        jobs.append(lambda: plot_training_curves(exp_dir))
    for job in jobs:
        try:
            written.append(job())
        except Exception as exc:  # noqa: BLE001 - plotting must never fail the run
            print(f"warning: could not write a plot in {exp_dir}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    if written:
        print("Plots written: " + ", ".join(str(p) for p in written))
    return written
