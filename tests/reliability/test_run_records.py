"""A run's records stay together and true (Reliability III, findings 2, 3 and 9).

A fresh ``bpm train`` in a used folder writes and moves nothing until every start-up check passed,
then moves the previous run's records aside together into one dated folder; a re-run from a run's
own ``config.json`` goes to a new folder; ``bpm evaluate --exp_dir`` respects the folder lock and
records where its features came from; a resume records switch changes without claiming the
weights were trained with them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _runner import TALLY, cli_error, one_epoch

from bpm.cli import main
from bpm.engine.runfolder import LOCK_NAME


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (recursively) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory) -> Path:
    """A finished one-epoch training folder, with a test run's records beside the training run's."""
    exp_dir = tmp_path_factory.mktemp("run") / "exp"
    assert main(one_epoch(tiny_world, exp_dir)) == 0
    assert main(["test", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--rerank", "false",
                 "--exp_dir", str(exp_dir), "--workers", "0", "--log_to_file", "false"]) == 0
    assert (exp_dir / "test_results.json").is_file()
    return exp_dir


def copy_run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained folder whose config.json names the copy (as the run's own record would)."""
    target = tmp_path / "exp"
    shutil.copytree(trained, target)
    config = json.loads((target / "config.json").read_text())
    config["exp_dir"] = str(target)
    (target / "config.json").write_text(json.dumps(config))
    return target


# ----------------------------------------------------------------------------- finding 2
def test_a_fresh_run_that_fails_a_start_up_check_changes_nothing(tiny_world, trained, tmp_path, capsys):
    exp_dir = copy_run(trained, tmp_path)
    before = snapshot(exp_dir)
    TALLY.fault("fresh run refused at start-up in a used folder")
    line = cli_error(capsys, one_epoch(tiny_world, exp_dir, "--ids_per_batch", "32"))
    assert "--ids_per_batch 32" in line
    assert snapshot(exp_dir) == before
    assert sorted(p.name for p in exp_dir.iterdir()) == sorted({Path(k).parts[0] for k in before})


def test_a_fresh_run_moves_the_previous_records_aside_together(tiny_world, trained, tmp_path, capsys):
    exp_dir = copy_run(trained, tmp_path)
    before = snapshot(exp_dir)
    TALLY.fault("fresh run in a used experiment folder")
    assert main(one_epoch(tiny_world, exp_dir)) == 0
    out = capsys.readouterr().out
    previous = [p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith("previous-")]
    assert len(previous) == 1 and str(previous[0]) in out
    kept = snapshot(previous[0])
    for name in ("ckpt.pth", "config.json", "results.json", "train_log.jsonl", "test_config.json",
                 "test_results.json", "cmc_curve.png", "training_curves.png", "test_cmc_curve.png"):
        assert kept[name] == before[name], name
    assert not (exp_dir / "test_results.json").exists()  # the old model's test no longer sits beside the new ckpt
    assert (exp_dir / "ckpt.pth").is_file() and (exp_dir / "results.json").is_file()
    assert not list(exp_dir.glob("*.bak"))
    steps = [json.loads(line)["step"] for line in (exp_dir / "train_log.jsonl").read_text().splitlines()
             if '"kind": "step"' in line]
    assert steps == sorted(set(steps)) and steps[0] == 1  # this run's steps only
    assert not (exp_dir / LOCK_NAME).exists()


def test_a_rerun_from_a_runs_own_config_goes_to_a_new_folder(trained, tmp_path, capsys):
    exp_dir = copy_run(trained, tmp_path)
    before = snapshot(exp_dir)
    assert main(["train", "--config", str(exp_dir / "config.json")]) == 0
    assert snapshot(exp_dir) == before
    reruns = [p for p in tmp_path.iterdir() if p.name.startswith("exp-rerun-")]
    assert len(reruns) == 1 and (reruns[0] / "ckpt.pth").is_file()
    assert f"--exp_dir {reruns[0]}" in capsys.readouterr().out
    assert json.loads((reruns[0] / "config.json").read_text())["exp_dir"] == str(reruns[0])


# ----------------------------------------------------------------------------- finding 9
def test_resuming_a_finished_run_with_a_changed_switch_keeps_the_trained_values(tiny_world, trained, tmp_path, capsys):
    exp_dir = copy_run(trained, tmp_path)
    ckpt = (exp_dir / "ckpt.pth").read_bytes()
    assert main(one_epoch(tiny_world, exp_dir, "--resume", "true", "--weight_decay", "0")) == 0
    config = json.loads((exp_dir / "config.json").read_text())
    assert config["weight_decay"] == 0.0005  # no step ran with 0
    assert any(c.startswith("weight_decay 0.0005 -> 0.0") and "not applied" in c for c in config["resume_changes"])
    assert (exp_dir / "ckpt.pth").read_bytes() == ckpt


def test_the_epoch_line_after_a_mid_epoch_resume_says_which_steps_it_averages(tiny_world, tmp_path, capsys):
    from _runner import make_trainer

    trainer = make_trainer(tiny_world, tmp_path / "exp")
    trainer.position.step = 2  # as a resume in the middle of epoch 1 leaves it
    trainer.position.global_step = 2
    trainer._train_epoch(None)
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Ep 1,")][-1]
    steps = len(trainer.sampler)
    assert f"means of steps 3-{steps} only (resumed mid-epoch)" in line


# ----------------------------------------------------------------------------- finding 10
def test_bpm_test_says_where_it_saved_the_features(tiny_world, trained, tmp_path, capsys):
    features = tmp_path / "f.h5"
    assert main(["test", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--rerank", "false",
                 "--model_weight_file", str(trained / "ckpt.pth"), "--exp_dir", str(tmp_path / "t"),
                 "--workers", "0", "--log_to_file", "false", "--save_features", str(features)]) == 0
    assert f"Features written to {features}" in capsys.readouterr().out and features.is_file()
