"""``--config FILE``: a run's config.json re-runs the same settings; typed switches win over the file;
config.json and results.json record the versions."""
from __future__ import annotations

import json

import pytest

from bpm.commands import train
from bpm.cli.switches import save_config
from bpm.cli.helpformat import make_parser
from bpm.cli.switches import apply_recipe
from bpm.cli.run_config import git_commit, parse_args_with_config, run_versions


def _parse(argv):
    parser = make_parser("bpm train")
    train.add_arguments(parser)
    args = parse_args_with_config(parser, argv)
    apply_recipe(args)
    return args


def _settings(args):
    """The switches, less the file name and the run folder (a re-run from a run's record gets a new one)."""
    return {k: v for k, v in vars(args).items() if k not in ("config", "exp_dir")}


def test_written_config_round_trips(tmp_path):
    first = _parse(["-d", "()", "--recipe", "bot", "--lr", "0.03", "--resize_h_w", "(96, 48)", "--optimizer", "sgd",
                    "--staircase_decay_at_epochs", "(5, 9)", "--loss-scale", "dynamic", "--total_epochs", "7"])
    path = tmp_path / "config.json"
    save_config(vars(first), path, {"versions": {"bpm": "x"}})
    again = _parse(["--config", str(path)])
    assert _settings(again) == _settings(first)
    assert again.exp_dir.startswith(f"{tmp_path}-rerun-")  # not the folder the record came from
    save_config(vars(again), tmp_path / "again.json")
    assert _settings(_parse(["--config", str(tmp_path / "again.json")])) == _settings(first)


def test_command_line_wins_over_the_file_wherever_it_is(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"base_lr": 0.01, "total_epochs": 5, "resize_h_w": [64, 32], "sys_device_ids": []}))
    for argv in (["--config", str(path), "--lr", "0.5"], ["--lr", "0.5", "--config", str(path)]):
        args = _parse(argv)
        assert (args.base_lr, args.total_epochs, args.resize_h_w, args.sys_device_ids) == (0.5, 5, (64, 32), ())


@pytest.mark.parametrize("content,message", [
    ('{"lr_typo": 1}', "unknown setting(s) lr_typo"),
    ("not json", "not a readable JSON file"),
    ('{"recipe": "nope"}', "recipe: 'nope' is not one of"),
    ('{"resize_h_w": "(1, 2, 3)"}', "resize_h_w:"),
    # Reliability III finding 6: values that are not text go through the same type checks.
    ('{"resize_h_w": 64}', "resize_h_w: expected 2 numbers"),
    ('{"resize_h_w": [64, "x"]}', "resize_h_w: expected a tuple of numbers"),
    ('{"ids_per_batch": 8.5}', "ids_per_batch: expected a whole number, got 8.5"),
    ('{"base_lr": true}', "base_lr: expected a number, got true"),
    ('{"set_seed": 3}', "set_seed: expected a boolean"),
    ('{"exp_dir": 5}', "exp_dir: expected text, got 5"),
    ('{"only_test": true}', "records a test run (only_test: true)"),
])
def test_bad_config_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as done:
        _parse(["-d", "()", "--config", str(path)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: --config") and message in err and err.count("\n") == 1


def test_versions_are_recorded():
    versions = run_versions("cpu")
    assert versions["bpm"] and versions["torch"] and versions["device"] == "cpu" and versions["cpu"]
    assert set(versions) >= {"torchvision", "onnxruntime", "cuda", "git_commit"}
    commit = git_commit()
    assert commit is None or len(commit.split("+")[0]) == 40


def test_a_training_runs_config_serves_bpm_test(tmp_path, capsys):
    """bpm test has no training switches, yet takes a training run's config.json: it uses the data, model,
    precision and evaluation settings and skips the training ones; a name no command knows is still refused."""
    from bpm.commands import test

    trained = _parse(["-d", "()", "--dataset", "cuhk03", "--resize_h_w", "(96, 48)", "--opt-level", "O1",
                      "--total_epochs", "7", "--lr", "0.03"])
    path = tmp_path / "config.json"
    save_config(vars(trained), path, {"versions": {"bpm": "x"}, "resume_changes": ["--lr"]})
    parser = make_parser("bpm test")
    test.add_arguments(parser)
    args = parse_args_with_config(parser, ["--config", str(path)])
    assert (args.dataset, args.resize_h_w, args.opt_level, args.sys_device_ids) == ("cuhk03", (96, 48), "O1", ())
    assert not hasattr(args, "base_lr") and not hasattr(args, "total_epochs")

    path.write_text(json.dumps({**json.loads(path.read_text()), "lr_typo": 1}))
    with pytest.raises(SystemExit):
        parse_args_with_config(parser, ["--config", str(path)])
    assert "unknown setting(s) lr_typo" in capsys.readouterr().err


def test_a_test_record_trains_nothing_silently_but_evaluates_when_asked(tmp_path):
    """Reliability III finding 6: a test run's record given to bpm train is refused (above) unless
    --only_test true is typed, when it evaluates as asked."""
    path = tmp_path / "test_config.json"
    path.write_text(json.dumps({"only_test": True, "resize_h_w": [64, 32]}))
    args = _parse(["-d", "()", "--config", str(path), "--only_test", "true"])
    assert args.only_test is True and args.resize_h_w == (64, 32)
