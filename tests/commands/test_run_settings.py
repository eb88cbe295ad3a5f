"""The run's settings are made once from the switches, in groups, and ``config.json`` is written from
them: ``--config config.json`` reproduces the same settings, and records of the previous release
(switch names as keys) still read and resume."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

from bpm.commands import test as test_command
from bpm.commands import train
from bpm.cli.switches import apply_recipe, save_config, train_config
from bpm.engine.train_config import TrainConfig
from bpm.cli.helpformat import make_parser
from bpm.cli.run_config import parse_args_with_config

# A training run's config.json as the previous release wrote it (vars(args); bpm 0.1.0).
OLD_CONFIG = {
    "amp_dtype": None, "base_lr": 0.00035, "batch_size_test": 64, "center_loss_weight": 0.0, "ckpt_every_steps": 0,
    "config": None, "crop_prob": 0.0, "crop_ratio": 1.0, "cuhk03_type": "detected", "data_root": "WORLD",
    "dataset": "market1501", "dist_timeout": 1800.0, "distill_extra": "", "distill_extra_per_batch": 0,
    "distill_metric": "cosine", "distill_weight": 0.0, "epochs_per_val": 10000000000.0, "erase": True,
    "erase_prob": 0.5, "eval_untrained": False, "exp_decay_at_epoch": 151, "exp_dir": "EXP",
    "gather_for_mining": False, "id_loss_weight": 1.0, "ids_per_batch": 4, "ims_per_id": 2,
    "keep_batchnorm_fp32": True, "label_smoothing": 0.1, "last_conv_stride": 1, "log_to_file": False,
    "loss_scale": None, "lr_decay_type": "cosine", "margin": 0.3, "max_nonfinite_steps": 50, "mirror": True,
    "model_weight_file": "", "momentum": 0.9, "mq_pooling": "average", "neck": "bnneck", "net": "mobilenet_v2",
    "net_pretrained_path": "none", "normalize_feature": False, "only_test": False, "opt_level": "O0",
    "optimizer": "adam", "pad_crop": 2, "pooling": "avg", "recipe": "bot", "relational_weight": 0.0, "rerank": False,
    "resize_h_w": [64, 32], "resume": False, "run": 1, "sampler_epoch": "images", "save_features": "", "seed": 1,
    "set_seed": True, "skip_bad_images": False, "soft_margin": False, "staircase_decay_at_epochs": [101, 201],
    "staircase_decay_multiply_factor": 0.1, "steps_per_log": 0, "sync_bn": False, "sys_device_ids": [],
    "teacher": "", "teacher_cache": "", "teacher_input": "", "teacher_per_step": False, "test_flip": False,
    "test_normalize": None, "total_epochs": 1, "trainset_part": "trainval", "triplet_weight": 1.0,
    "versions": {"bpm": "0.1.0", "torch": "2.14.1"}, "warmup_epochs": 1, "weight_decay": 0.0005, "workers": 0,
}
RECORDS = {"versions", "config"}


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = make_parser("bpm", "")
    module.add_arguments(parser)
    args = parse_args_with_config(parser, argv)
    if module is train:
        apply_recipe(args)
    else:
        args.only_test = True
    return args


def written(settings: train.RunSettings, path: Path) -> dict:
    save_config(settings.switches(), path, {"versions": {"bpm": "test"}})
    return json.loads(path.read_text())


SMALL = ["-d", "()", "--dataset", "market1501", "--data_root", "/nowhere", "--workers", "0"]


@pytest.mark.parametrize("module,argv", [
    (train, [*SMALL, "--recipe", "bot", "--resize_h_w", "(64, 32)"]),
    (train, [*SMALL, "--recipe", "softmax", "--set_seed", "false", "--seed", "5", "--normalize_feature", "true",
             "--loss-scale", "128", "--staircase_decay_at_epochs", "(3,)", "--net", "resnet50"]),
    (test_command, [*SMALL, "--test_flip", "true", "--model_weight_file", "w.pth", "--mq_pooling", "max"]),
])
def test_config_json_round_trips_through_config(module, argv, tmp_path):
    first = train.run_settings(parse(module, [*argv, "--exp_dir", "e"]))
    record = written(first, tmp_path / "config.json")
    again = train.run_settings(parse(module, ["--config", str(tmp_path / "config.json"), "--exp_dir", "e"]))
    assert again.config_file == str(tmp_path / "config.json")
    again = replace(again, config_file=None)
    assert again == first
    written(again, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "config.json").read_bytes()
    assert record["only_test"] is (module is test_command)


@pytest.mark.parametrize("module", [train, test_command])
def test_config_json_holds_every_switch_of_the_command_once(module):
    parser = make_parser("bpm", "")
    module.add_arguments(parser)
    dests = {a.dest for a in parser._actions if a.dest != "help"} | {"only_test"}
    assert set(train.run_settings(parse(module, SMALL)).switches()) == dests


def test_a_config_json_of_the_previous_release_reads_into_the_same_settings(tmp_path):
    old = tmp_path / "config.json"
    old.write_text(json.dumps(OLD_CONFIG))
    settings = train.run_settings(parse(train, ["--config", str(old), "--exp_dir", "EXP"]))
    assert settings.model.resize_h_w == (64, 32) and settings.start.neck == "bnneck"
    assert settings.train.seed == 1 and settings.features.workers == 0
    new = settings.switches()
    assert {k: v for k, v in new.items() if k not in RECORDS} == \
        {k: (tuple(v) if isinstance(v, list) else v) for k, v in OLD_CONFIG.items() if k not in RECORDS}


def test_a_field_the_switches_lack_is_an_error_not_a_default():
    args = parse(train, SMALL)
    del args.warmup_epochs
    with pytest.raises(TypeError, match="warmup_epochs"):
        train_config(args)
    assert "resize_h_w" not in {f.name for f in fields(TrainConfig)}  # the model group's alone


@pytest.mark.slow
def test_a_trained_run_reruns_from_its_config_json_and_resumes_from_an_old_one(tiny_world, tmp_path, capsys):
    from bpm.cli import main

    exp = tmp_path / "run"
    switches = ["-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--exp_dir", str(exp),
                "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--total_epochs", "1",
                "--workers", "0", "--set_seed", "true", "--log_to_file", "false", "--rerank", "false",
                "--steps_per_log", "0", "--recipe", "bot", "--net_pretrained_path", "none"]
    assert main(["train", *switches]) == 0
    first = json.loads((exp / "config.json").read_text())
    rerun = tmp_path / "rerun"
    assert main(["train", "--config", str(exp / "config.json"), "--exp_dir", str(rerun)]) == 0
    second = json.loads((rerun / "config.json").read_text())
    assert second.pop("config") == str(exp / "config.json") and second.pop("exp_dir") == str(rerun)
    assert second == {k: v for k, v in first.items() if k not in ("config", "exp_dir")} | \
        {"versions": second["versions"]}
    assert json.loads((rerun / "results.json").read_text())["mAP"] == \
        json.loads((exp / "results.json").read_text())["mAP"]

    # Resume the first run from a config.json in the previous release's format, with one change.
    old = {**OLD_CONFIG, "data_root": str(tiny_world), "exp_dir": str(exp)}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (exp / "config.json").write_text(json.dumps(old))
    assert main(["train", "--config", str(tmp_path / "old.json"), "--resume", "true", "--total_epochs", "2",
                 "--weight_decay", "0"]) == 0
    resumed = json.loads((exp / "config.json").read_text())
    assert resumed["weight_decay"] == 0 and resumed["total_epochs"] == 2
    assert any(c.startswith("weight_decay 0.0005 -> 0") for c in resumed["resume_changes"])
    capsys.readouterr()
