"""``--config FILE``: a run's switches from a JSON file (e.g. a previous run's ``config.json``),
with switches typed on the command line winning; and the versions every run records.

The file is read before the command line is parsed and becomes the parser's defaults, so
argparse itself gives the precedence (typed > file > built-in) and checks every value with the
same type functions as typed text. A ``config.json`` written by ``bpm train`` therefore
re-runs the same settings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from bpm.errors import BpmError

CONFIG_SWITCH = "--config"
# Keys of a written config.json that are records, not switches.
RECORD_KEYS = {"versions", "config", "resume_changes"}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(CONFIG_SWITCH, default=None, metavar="FILE",
                        help="JSON file of switches (a run's config.json); switches typed on the command line win")


def parse_args_with_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the defaults taken from ``--config FILE`` when given."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument(CONFIG_SWITCH, default=None)
    known, _rest = pre.parse_known_args(argv)
    if known.config:
        try:
            parser.set_defaults(**config_defaults(parser, known.config, _typed(argv, "--only_test")))
        except BpmError as exc:
            parser.exit(2, f"error: {exc}\n")
    args = parser.parse_args(argv)
    if known.config:
        redirect_rerun(args, known.config, argv)
    return args


def _typed(argv: Sequence[str], switch: str) -> bool:
    return any(a == switch or a.startswith(switch + "=") for a in argv)


def redirect_rerun(args: argparse.Namespace, path: str | Path, argv: Sequence[str]) -> None:
    """A fresh training run from a run's own ``config.json`` goes to ``<its folder>-rerun-<time>``.

    Why: the record names the folder it came from (``exp_dir``), so re-running it used to start
    afresh in that very folder. A file that is not a run's record (no ``versions``), a typed
    ``--exp_dir``, ``--resume true`` (which continues that run) and evaluation keep the folder.
    """
    if not hasattr(args, "resume") or args.resume or getattr(args, "only_test", False) or _typed(argv, "--exp_dir"):
        return
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(values, dict) or "versions" not in values:
        return
    import time

    source = str(values.get("exp_dir") or Path(path).resolve().parent).rstrip("/")
    args.exp_dir = f"{source}-rerun-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"--config {path} is the record of the run in {source}; this fresh run goes to --exp_dir {args.exp_dir} "
          "(type --exp_dir to choose the folder, or --resume true to continue that run)")


def training_switches() -> set[str]:
    """The names of every ``bpm train`` switch (what a training run's config.json may hold)."""
    from bpm.cli.switches import add_train_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_train_arguments(parser)
    return {a.dest for a in parser._actions} | {"only_test"}


def config_defaults(parser: argparse.ArgumentParser, path: str | Path, test_record_ok: bool = False) -> dict[str, Any]:
    """The switches in a JSON file as parser defaults, each through its switch's own type function
    (:func:`typed_value`); unknown names are refused in one line, and so is a test run's record
    (``only_test: true``) given to a training command, unless ``test_record_ok`` (--only_test typed)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise BpmError(f"--config {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BpmError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(values, dict):
        raise BpmError(f"--config {path}: expected a JSON object of switch names and values")
    actions = {a.dest: a for a in parser._actions if a.dest not in (argparse.SUPPRESS, "help")}
    # A training run's config.json also serves `bpm test`: the training switches it has no use for are skipped.
    skipped = RECORD_KEYS | (training_switches() - set(actions))
    unknown = sorted(k for k in values if k not in actions and k not in skipped)
    if unknown:
        raise BpmError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    if values.get("only_test") is True and "only_test" in actions and not test_record_ok:
        raise BpmError(f"--config {path}: records a test run (only_test: true), not a training run; evaluate with "
                       f"`bpm test --config {path}`, or type --only_test true to evaluate with this command")
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        if key in skipped:
            continue
        action = actions[key]
        value = typed_value(action, value, f"--config {path}: {key}")
        if action.choices is not None and value is not None and value not in action.choices:
            raise BpmError(f"--config {path}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
        defaults[key] = value
    return defaults


def _json_text(value: Any) -> str:
    """A JSON value as the text one would type for it (``true``, ``(64, 32)``, ``0.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(" + ", ".join(_json_text(v) if not isinstance(v, str) else repr(v) for v in value) \
            + ("," if len(value) == 1 else "") + ")"
    return repr(value) if isinstance(value, float) else str(value)


def typed_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A ``--config`` value through its switch's own type function, whatever its JSON type.

    Why: only text used to be checked, so ``"resize_h_w": 64`` reached the model as an int (a
    TypeError traceback) and ``"ids_per_batch": 8.5`` ran as a float. ``null`` stays None (a
    default the recipe fills).
    """
    if value is None:
        return None
    kind = action.type
    if kind is None:  # a text switch
        if not isinstance(value, str):
            raise BpmError(f"{where}: expected text, got {json.dumps(value)}")
        return value
    if isinstance(value, str):
        text = value
    elif kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BpmError(f"{where}: expected a number, got {json.dumps(value)}")
    elif kind is int and isinstance(value, float):
        if not value.is_integer():
            raise BpmError(f"{where}: expected a whole number, got {value!r}")
        text = str(int(value))
    else:
        text = _json_text(value)
    try:
        return kind(text)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        if kind is int:
            raise BpmError(f"{where}: expected a whole number, got {json.dumps(value)}") from None
        if kind is float:
            raise BpmError(f"{where}: expected a number, got {json.dumps(value)}") from None
        raise BpmError(f"{where}: {exc}") from None


def run_versions(device: object = None) -> dict[str, Any]:
    """What produced a run: bpm, torch, torchvision, onnxruntime and CUDA versions, the device, the
    CPU model, and the git commit when bpm runs from a checkout (``None`` where unknown)."""
    import torch

    from bpm import __version__
    from bpm.machine import describe_machine

    machine = describe_machine()
    return {
        "bpm": __version__,
        "torch": machine.get("torch"),
        "torchvision": machine.get("torchvision"),
        "onnxruntime": machine.get("onnxruntime"),
        "cuda": torch.version.cuda,
        "device": str(device) if device is not None else None,
        "gpu": torch.cuda.get_device_name(device) if device is not None and str(device).startswith("cuda") else None,
        "cpu": machine.get("cpu"),
        "python": machine.get("python") or sys.version.split()[0],
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``None`` for an installed package."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
