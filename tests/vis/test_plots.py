"""Training-curve and CMC plots: PNG files written from a synthetic run log, robust to resumes and bad lines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpm.cli import main
from bpm.errors import BpmError
from bpm.vis.plots import plot_cmc_curves, plot_training_curves, read_run_log, write_run_plots


def _step(step: int, epoch: int, loss: float) -> dict:
    return {"kind": "step", "step": step, "epoch": epoch, "loss": loss, "precision": min(1.0, step / 30),
            "satisfy_margin": min(1.0, step / 40), "dist_ap": 1.0 - step / 100, "dist_an": 1.0 + step / 100,
            "lr": 2e-4 * 0.99 ** step, "loss_scale": 65536.0 / 2 ** (step // 10)}


def _write_log(exp_dir: Path, resumed: bool = True) -> Path:
    """30 steps over 3 epochs with validation; then a resume that repeats steps 21-30 with other losses."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    lines = [_step(s, (s - 1) // 10 + 1, 1.0 / s) for s in range(1, 31)]
    lines += [{"kind": "val", "step": 10 * e, "epoch": e, "mAP": 0.1 * e, "Rank1": 0.2 * e} for e in (1, 2, 3)]
    if resumed:
        lines += [_step(s, 3, 5.0) for s in range(21, 31)]
        lines += [{"kind": "val", "step": 30, "epoch": 3, "mAP": 0.35, "Rank1": 0.65}]
    path = exp_dir / "train_log.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    return path


def _png(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 10_000
    image = Image.open(path)
    assert image.format == "PNG"
    # Something was drawn: a plot is far from a blank canvas.
    assert np.asarray(image.convert("L")).std() > 10
    return image


def test_training_curves_png(tmp_path):
    _write_log(tmp_path)
    path = plot_training_curves(tmp_path)
    assert path == tmp_path / "training_curves.png"
    assert _png(path).size == (1500, 720)  # 3 x 2 panels: 5 step panels + validation


def test_resumed_steps_replace_earlier_ones(tmp_path):
    steps, vals = read_run_log(_write_log(tmp_path))
    assert [s["step"] for s in steps] == list(range(1, 31))
    assert [s["loss"] for s in steps[20:]] == [5.0] * 10 and steps[19]["loss"] == pytest.approx(1 / 20)
    assert [v["epoch"] for v in vals] == [1, 2, 3] and vals[-1]["mAP"] == 0.35


def test_log_without_validation_or_loss_scale(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    lines = [{k: v for k, v in _step(s, 1, 1.0).items() if k != "loss_scale"} for s in range(1, 5)]
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    _png(plot_training_curves(tmp_path))


def test_bpm_plot_command(tmp_path, capsys):
    _write_log(tmp_path / "run")
    assert main(["plot", str(tmp_path / "run")]) == 0
    _png(tmp_path / "run" / "training_curves.png")
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "other.png")]) == 0
    _png(tmp_path / "other.png")
    assert "Training curves written to" in capsys.readouterr().out


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "experiment folder not found"),
    (lambda d: d.mkdir(), "no run log"),
    (lambda d: (d.mkdir(), (d / "train_log.jsonl").write_text('{"kind": "step", "step": 1}\nnot json\n')),
     "train_log.jsonl:2: not a run-log line"),
    (lambda d: (d.mkdir(), (d / "train_log.jsonl").write_text("")), "holds no step or validation records"),
])
def test_bpm_plot_errors(tmp_path, capsys, setup, message):
    setup(tmp_path / "run")
    assert main(["plot", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def _reports() -> dict:
    cmc = np.minimum(1.0, np.linspace(0.4, 1.2, 50))
    return {"market1501": {"single_query": {"cmc": cmc, "mAP": 0.3},
                           "reranked_single_query": {"cmc": np.minimum(1.0, cmc + 0.1), "mAP": 0.4}},
            "duke": {"single_query": {"cmc": cmc * 0.9, "mAP": 0.2}}}


def test_cmc_png(tmp_path):
    _png(plot_cmc_curves(_reports(), tmp_path / "cmc_curve.png"))
    with pytest.raises(BpmError, match="no CMC arrays"):
        plot_cmc_curves({"x": {"single_query": {"cmc": np.zeros(0), "mAP": 0.0}}}, tmp_path / "empty.png")


def test_after_run_plots_and_failures_only_warn(tmp_path, capsys):
    _write_log(tmp_path)
    written = write_run_plots(tmp_path, _reports())
    assert sorted(p.name for p in written) == ["cmc_curve.png", "training_curves.png"]
    (tmp_path / "train_log.jsonl").write_text("garbage\n")
    written = write_run_plots(tmp_path, {"x": {"single_query": {"cmc": np.zeros(0), "mAP": 0.0}}})
    assert written == []
    err = capsys.readouterr().err
    assert err.count("warning: could not write a plot") == 2


def test_only_test_run_writes_the_cmc_curve_only(tmp_path):
    assert [p.name for p in write_run_plots(tmp_path, _reports())] == ["cmc_curve.png"]
