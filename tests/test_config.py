"""The original's switches: every one accepted with its original spelling and value syntax."""
import argparse
import ast
from pathlib import Path

import pytest

from bpm.cli.switches import (add_train_arguments, apply_recipe, data_settings, model_settings, parse_tuple,
                        precision_settings, str2bool, train_config)
from bpm.settings import DataSettings, ModelSettings, PrecisionSettings, is_unset
from bpm.data.transforms import RandomCropResize, train_transform

ROOT = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p


# Every switch of the original train.py (seed-facts), with a non-default value in its original syntax.
ORIGINAL_SWITCHES = {
    "-d": ("(0,)", "sys_device_ids", (0,)),
    "--sys_device_ids": ("()", "sys_device_ids", ()),
    "-r": ("3", "run", 3),
    "--run": ("2", "run", 2),
    "--set_seed": ("true", "set_seed", True),
    "--dataset": ("cuhk03", "dataset", "cuhk03"),
    "--trainset_part": ("train", "trainset_part", "train"),
    "--resize_h_w": ("(384, 192)", "resize_h_w", (384, 192)),
    "--crop_prob": ("0.5", "crop_prob", 0.5),
    "--crop_ratio": ("0.9", "crop_ratio", 0.9),
    "--mirror": ("no", "mirror", False),
    "--erase": ("0", "erase", False),
    "--erase_prob": ("0.5", "erase_prob", 0.5),
    "--ids_per_batch": ("8", "ids_per_batch", 8),
    "--ims_per_id": ("2", "ims_per_id", 2),
    "--log_to_file": ("false", "log_to_file", False),
    "--steps_per_log": ("5", "steps_per_log", 5),
    "--epochs_per_val": ("5", "epochs_per_val", 5.0),
    "--last_conv_stride": ("2", "last_conv_stride", 2),
    "--normalize_feature": ("yes", "normalize_feature", True),
    "--margin": ("0.5", "margin", 0.5),
    "--only_test": ("1", "only_test", True),
    "--resume": ("True", "resume", True),
    "--exp_dir": ("out", "exp_dir", "out"),
    "--model_weight_file": ("w.pth", "model_weight_file", "w.pth"),
    "--opt-level": ("O2", "opt_level", "O2"),
    "--keep-batchnorm-fp32": ("false", "keep_batchnorm_fp32", False),
    "--loss-scale": ("128", "loss_scale", 128.0),
    "--base_lr": ("1e-3", "base_lr", 1e-3),
    "--lr_decay_type": ("staircase", "lr_decay_type", "staircase"),
    "--exp_decay_at_epoch": ("100", "exp_decay_at_epoch", 100),
    "--staircase_decay_at_epochs": ("(50, 100, 150)", "staircase_decay_at_epochs", (50, 100, 150)),
    "--staircase_decay_multiply_factor": ("0.5", "staircase_decay_multiply_factor", 0.5),
    "--momentum": ("0.8", "momentum", 0.8),
    "--total_epochs": ("10", "total_epochs", 10),
    "--net": ("resnet50", "net", "resnet50"),
    "--net_pretrained_path": ("m.pth.tar", "net_pretrained_path", "m.pth.tar"),
}

DEFAULTS = {
    "run": 1, "set_seed": False, "dataset": "market1501", "trainset_part": "trainval",
    "resize_h_w": (256, 128), "crop_prob": 0.1, "crop_ratio": 1.0, "mirror": True, "erase": True,
    "erase_prob": 0.2, "triplet_weight": 1.0, "ids_per_batch": 32, "ims_per_id": 4, "log_to_file": True,
    "steps_per_log": 20,
    "epochs_per_val": 1e10, "last_conv_stride": 1, "normalize_feature": False, "margin": 0.3, "only_test": False,
    "resume": False, "exp_dir": "", "model_weight_file": "", "opt_level": "O0", "keep_batchnorm_fp32": True,
    "loss_scale": None, "base_lr": 2e-4, "lr_decay_type": "exp", "exp_decay_at_epoch": 151,
    "staircase_decay_at_epochs": (101, 201), "staircase_decay_multiply_factor": 0.1, "momentum": 0.9,
    "total_epochs": 300, "net": "mobilenet_v2",
    "net_pretrained_path": "imagenet",  # the original's '' also started from ImageNet (it always downloaded)
}


@pytest.mark.parametrize("flag", sorted(ORIGINAL_SWITCHES))
def test_every_original_switch_is_accepted(flag):
    text, dest, expected = ORIGINAL_SWITCHES[flag]
    assert getattr(parser().parse_args([flag, text]), dest) == expected


def test_original_defaults():
    """The original's command lines (script/experiment/train.py) run the original recipe."""
    args = parser().parse_args(["--recipe", "original"])
    apply_recipe(args)
    for dest, value in DEFAULTS.items():
        assert getattr(args, dest) == value, dest


def test_softmax_is_the_default_recipe_and_every_recipe_switch_can_be_overridden():
    args = parser().parse_args(["--total_epochs", "24", "--resize_h_w", "(128, 64)"])
    apply_recipe(args)
    assert (args.recipe, args.neck, args.id_loss_weight, args.lr_decay_type) == ("softmax", "bnneck", 1.0, "cosine")
    assert args.warmup_epochs == 2 and args.pad_crop == 5 and args.erase_prob == 0.5  # scaled with budget and size
    assert args.sampler_epoch == "images" and args.erase is False and args.triplet_weight == 0.0
    args = parser().parse_args(["--neck", "none", "--base_lr", "1e-3", "--erase", "false", "--warmup_epochs", "0"])
    apply_recipe(args)
    assert (args.neck, args.base_lr, args.erase, args.warmup_epochs, args.id_loss_weight) == ("none", 1e-3, False, 0, 1.0)


def test_original_script_runs_the_original_recipe(monkeypatch):
    import runpy
    import sys

    seen = {}
    monkeypatch.setattr("bpm.cli.main", lambda argv: seen.setdefault("argv", argv) and 0)
    monkeypatch.setattr(sys, "argv", ["train.py", "--total_epochs", "1"])
    with pytest.raises(SystemExit):
        runpy.run_path("script/experiment/train.py", run_name="__main__")
    assert seen["argv"][:3] == ["train", "--recipe", "original"] and seen["argv"][3:] == ["--total_epochs", "1"]


def test_loss_scale_dynamic():
    assert parser().parse_args(["--loss-scale", "dynamic"]).loss_scale == "dynamic"


@pytest.mark.parametrize("word,value", [("TRUE", True), ("Yes", True), ("1", True), ("f", False), ("NO", False)])
def test_str2bool_words(word, value):
    assert str2bool(word) is value


@pytest.mark.parametrize(
    "flag,text",
    [
        ("--mirror", "maybe"),
        ("-d", "(0,"),
        ("-d", "__import__('os').system('touch /tmp/bpm_pwned')"),
        ("--resize_h_w", "(256,)"),
        ("--resize_h_w", "('a', 'b')"),
        ("--staircase_decay_at_epochs", "(1.5, 2)"),
        ("--loss-scale", "-1"),
        ("--loss-scale", "huge"),
        ("--loss-scale", "inf"),
        ("--last_conv_stride", "3"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_switch(flag, text, capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args([flag, text])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag.lstrip("-").split("/")[0] in err or flag in err


def test_tuple_text_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(argparse.ArgumentTypeError):
        parse_tuple(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()
    assert parse_tuple("(0, 1)") == (0, 1) and parse_tuple("()") == () and parse_tuple("3") == (3,)


def test_augmentation_switches_change_the_pipeline():
    def names(**kw):
        return [type(t).__name__ for t in train_transform((64, 32), **kw).transforms]

    assert "RandomErasing" in names(erase=True) and "RandomErasing" not in names(erase=False)
    assert "RandomHorizontalFlip" in names(mirror=True) and "RandomHorizontalFlip" not in names(mirror=False)
    erasing = train_transform((64, 32), erase=True, erase_prob=0.7).transforms[-1]
    assert erasing.p == 0.7 and erasing.scale == (0.02, 0.4)


def test_random_crop_uses_prob_and_ratio():
    from PIL import Image

    image = Image.new("RGB", (64, 128))
    assert RandomCropResize(1.0, 1.0)(image).size == (64, 128)  # ratio 1 disables
    sizes = {RandomCropResize(1.0, 0.5)(image).size for _ in range(20)}
    assert all(32 <= w <= 64 and 64 <= h <= 128 for w, h in sizes) and len(sizes) > 1
    assert RandomCropResize(0.0, 0.5)(image).size == (64, 128)


def test_loss_terms_reach_the_criterion():
    from bpm.losses.combine import ReidCriterion

    args = parser().parse_args(["--triplet_weight", "0", "--center_loss_weight", "0.0005", "--label_smoothing", "0.2"])
    apply_recipe(args)
    criterion = ReidCriterion(train_config(args).loss, num_classes=3, feature_dim=4)
    assert criterion.term("triplet") is None and criterion.term("id").epsilon == 0.2 and criterion.term("center") is not None


# --------------------------------------------------------------------------- one definition per switch


def _declared_switches(path: Path) -> set[str]:
    """Every ``--name`` that ``path`` passes to ``add_argument``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return found


def test_every_switch_of_a_group_is_declared_only_in_bpm_config():
    """A group switch (``--opt-level``, ``--net``, ``--dataset`` ...) typed anywhere else could drift apart
    from the group's type, default or choices: commands compose their parsers from the groups instead."""
    grouped = _declared_switches(ROOT / "bpm" / "cli" / "switches.py")
    assert {"--opt-level", "--net", "--dataset", "--resize_h_w", "--loss-scale", "-d"} <= grouped
    sources = [p for p in (ROOT / "bpm").rglob("*.py") if p != ROOT / "bpm" / "cli" / "switches.py"] + list((ROOT / "script").rglob("*.py"))
    again = {str(p.relative_to(ROOT)): sorted(_declared_switches(p) & grouped) for p in sources}
    assert {k: v for k, v in again.items() if v} == {}


def _command_parser(name: str) -> argparse.ArgumentParser:
    import importlib

    from bpm.cli import SUBCOMMANDS
    from bpm.cli.helpformat import make_parser

    parser = make_parser(f"bpm {name}", "")
    importlib.import_module(SUBCOMMANDS[name][0]).add_arguments(parser)
    return parser


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


@pytest.mark.parametrize("command", ["train", "test", "visualize", "export", "extract"])
def test_opt_level_takes_its_choices_from_the_precision_registry(command):
    from bpm.precision import OPT_LEVELS

    action = _option(_command_parser(command), "--opt-level")
    assert list(action.choices) == list(OPT_LEVELS)
    assert action.type("o2") == "O2"  # any case, as the original accepted


def test_dataset_and_net_choices_come_from_the_registries():
    from bpm.data.datasets import READERS
    from bpm.models.registry import backbone_choices, list_backbones

    for command in ("train", "test", "visualize", "data", "export"):
        assert sorted(_option(_command_parser(command), "--dataset").choices) == sorted(READERS)
    for command in ("train", "test", "visualize", "export", "extract"):
        assert list(_option(_command_parser(command), "--net").choices) == backbone_choices()
    assert set(list_backbones()) | {"mobilenetV2"} == set(backbone_choices())  # the original's spelling stays


def test_model_settings_give_none_for_what_was_not_typed():
    typed = model_settings(parser().parse_args(["--net", "mobilenetV2"])).overrides()
    assert typed == {"net": "mobilenetV2", "last_conv_stride": None, "resize_h_w": None}
    assert all(type(v) in (str, type(None)) for v in typed.values())  # no marker type below the boundary


def test_bpm_test_has_no_training_switch_and_visualize_no_save_features():
    test = _command_parser("test")
    for flag in ("--recipe", "--base_lr", "--total_epochs", "--resume", "--margin", "--loss-scale", "--erase"):
        assert _option(test, flag) is None, flag
    for flag in ("--model_weight_file", "--save_features", "--rerank", "--test_flip", "--opt-level", "--exp_dir"):
        assert _option(test, flag) is not None, flag
    assert _option(_command_parser("visualize"), "--save_features") is None


def test_export_reads_the_cuhk03_type_into_its_options():
    from bpm.commands.export import options_from_args

    args = _command_parser("export").parse_args(["--weights", "w.pth", "--out", "o", "--dataset", "cuhk03",
                                                 "--cuhk03_type", "labeled"])
    assert options_from_args(args).data.cuhk03_type == "labeled"


def test_switches_become_typed_settings_at_the_command_boundary():
    args = parser().parse_args(["--dataset", "cuhk03", "--cuhk03_type", "labeled", "--data_root", "/d",
                                "--opt-level", "o1", "--loss-scale", "128", "--net", "resnet50", "--set_seed", "true",
                                "--seed", "7", "--trainset_part", "train"])
    apply_recipe(args)
    assert data_settings(args) == DataSettings("cuhk03", "/d", "labeled", "train", False, 7)
    assert precision_settings(args) == PrecisionSettings("O1", True, None, 128.0)
    model = model_settings(args)
    assert model == ModelSettings("resnet50", 1, (256, 128))
    assert not is_unset(model.net) and is_unset(model.resize_h_w)  # a weights file may still set the size
    assert train_config(args).seed == 7


def test_below_the_command_boundary_no_function_takes_a_namespace():
    """Only the command layer (bpm/commands, bpm/cli/__init__.py, bpm/cli/switches.py, bpm/cli/run_config.py, bpm/cli/helpformat.py)
    handles argparse; the library below it takes typed settings."""
    boundary = {"bpm/cli/__init__.py", "bpm/cli/switches.py", "bpm/cli/run_config.py", "bpm/cli/helpformat.py"}
    offenders = []
    for path in (ROOT / "bpm").rglob("*.py"):
        if str(path.relative_to(ROOT)) in boundary or "commands" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "argparse" in names:
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_bot_is_bag_of_tricks_as_published_and_softmax_is_bot_without_two_tricks():
    """BoT (Luo et al. 2019): BNNeck, ID loss with label smoothing plus triplet at weight 1, random
    erasing p 0.5, warm-up, pad-and-crop, Adam 3.5e-4; softmax differs only in erasing, the triplet
    term and its learning rate (1e-3, measured better for the light backbones at 30 epochs)."""
    bot = parser().parse_args(["--recipe", "bot", "--total_epochs", "120", "--resize_h_w", "(256, 128)"])
    apply_recipe(bot)
    assert (bot.neck, bot.id_loss_weight, bot.label_smoothing, bot.triplet_weight) == ("bnneck", 1.0, 0.1, 1.0)
    assert (bot.erase, bot.erase_prob, bot.warmup_epochs, bot.pad_crop) == (True, 0.5, 10, 10)
    softmax = parser().parse_args(["--recipe", "softmax", "--total_epochs", "120", "--resize_h_w", "(256, 128)"])
    apply_recipe(softmax)
    differ = {k for k, v in vars(bot).items() if getattr(softmax, k) != v}
    assert differ == {"recipe", "erase", "triplet_weight", "base_lr"}
    assert (softmax.erase, softmax.triplet_weight, softmax.base_lr, bot.base_lr) == (False, 0.0, 1e-3, 3.5e-4)
    restored = parser().parse_args(["--recipe", "softmax", "--erase", "true", "--triplet_weight", "1",
                                    "--base_lr", "3.5e-4", "--total_epochs", "120", "--resize_h_w", "(256, 128)"])
    apply_recipe(restored)
    assert {k for k, v in vars(bot).items() if getattr(restored, k) != v} == {"recipe"}


def test_recipe_rules_read_plain_values():
    from bpm.recipes import recipe_values

    filled = recipe_values("bot", {"total_epochs": 120, "resize_h_w": (256, 128), "erase": True})
    assert filled["warmup_epochs"] == 10 and filled["pad_crop"] == 10
    assert "erase" not in filled  # a value the user gave is kept


def test_extension_switch_choices_come_from_the_registries():
    from bpm.engine.lr_schedule import SCHEDULES
    from bpm.engine.optimizers import OPTIMIZERS
    from bpm.models.necks import NECKS
    from bpm.models.pooling import POOLINGS

    actions = {a.dest: a for a in parser()._actions}
    for dest, registry in (("neck", NECKS), ("pooling", POOLINGS), ("optimizer", OPTIMIZERS),
                           ("lr_decay_type", SCHEDULES)):
        assert list(actions[dest].choices) == registry.choices(), dest
