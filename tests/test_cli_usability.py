"""What a new user types first: ``bpm --version``, no ``-d`` on a CPU-only machine, ``--lr``,
a misspelt switch, ``-h`` with defaults."""
from __future__ import annotations

import pytest
import torch

from bpm import __version__
from bpm.cli import SUBCOMMANDS, main
from bpm.commands import train
from bpm.cli.switches import device_ids
from bpm.cli.helpformat import make_parser


def _train_parser():
    parser = make_parser("bpm train")
    train.add_arguments(parser)
    return parser


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"bpm {__version__}"


def test_auto_device_is_the_cpu_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _train_parser().parse_args([]).sys_device_ids == ()
    assert capsys.readouterr().out.strip() == "device: cpu (auto: CUDA not available)"


def test_auto_device_is_gpu_0_with_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    assert device_ids("auto") == (0,)
    assert capsys.readouterr().out.strip() == "device: cuda:0 (auto: CUDA available, Test GPU)"


def test_explicit_device_keeps_the_originals_meaning(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _train_parser().parse_args(["-d", "(0,)"]).sys_device_ids == (0,)
    assert _train_parser().parse_args(["-d", "()"]).sys_device_ids == ()
    assert capsys.readouterr().out == ""


def test_lr_is_base_lr():
    assert _train_parser().parse_args(["-d", "()", "--lr", "0.1"]).base_lr == 0.1


@pytest.mark.parametrize("command", ["train", "test", "visualize", "export", "extract"])
def test_abbreviated_switch_is_an_error(command, capsys):
    required = {"export": ["--weights", "w", "--out", "o"], "extract": ["--weights", "w", "--images", "i", "--out", "o"]}
    with pytest.raises(SystemExit) as done:
        main([command, *required.get(command, []), "--total_epoch" if command in ("train", "test") else "--resize_h",
              "3"])
    assert done.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_every_subcommand_refuses_prefixes_and_shows_defaults():
    import importlib

    for name, (module, _help) in SUBCOMMANDS.items():
        parser = make_parser(f"bpm {name}")
        importlib.import_module(module).add_arguments(parser)
        assert parser.allow_abbrev is False
    text = _train_parser().format_help()
    assert "(default: 300)" in text and "(default: from --recipe)" in text and "(default: None)" not in text


def test_output_redirected_to_a_file_is_written_line_by_line(tmp_path):
    """A long export or training run redirected to a log shows each line as it is printed, not at the end."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    log = tmp_path / "out.log"
    script = ("import sys\nfrom bpm.cli import main\n"
              "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
              "print('progress')\nsys.stderr.write(open(sys.argv[1]).read())\n")
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-c", script, str(log)], stdout=out, stderr=subprocess.PIPE, text=True,
                              env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"bpm {__version__}", "progress"]  # in the file before the process ended
