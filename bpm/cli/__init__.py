"""The ``bpm`` command: one subcommand per job, each implemented in the module that owns it.

Each module listed in ``SUBCOMMANDS`` exposes ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them together and turns :class:`BpmError` into a one-line message.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from bpm import __version__
from bpm.errors import BpmError
from bpm.cli.helpformat import make_parser
from bpm.cli.run_config import parse_args_with_config

# name -> (module, one-line help). Modules are imported lazily so `bpm synth` does not pay for torch.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("bpm.commands.synth", "generate the synthetic demo world (Market-1501 layout)"),
    "train": ("bpm.commands.train", "train (and evaluate) with the original's switches"),
    "test": ("bpm.commands.test", "evaluate a weights file (train --only_test true, with only the switches evaluation uses)"),
    "evaluate": ("bpm.commands.evaluate", "evaluate features saved with --save_features, without the model"),
    "data": ("bpm.commands.data", "data check: validate a dataset and print its statistics"),
    "export": ("bpm.commands.export", "export weights and ONNX (FP32/FP16/INT8), each verified with ONNX Runtime"),
    "extract": ("bpm.commands.extract", "features of every image in a folder -> HDF5 or .mat"),
    "visualize": ("bpm.commands.visualize", "rank-list pictures (JPEG per query) and an index.html"),
    "plot": ("bpm.commands.plot", "plot a run's training curves (PNG) from EXP_DIR/train_log.jsonl"),
    "crops": ("bpm.commands.crops", "unlabelled person crops from video (a detector on every n-th frame) for --distill_extra"),
    "stream": ("bpm.commands.stream", "real-time re-ID on camera streams: detect, track, identify across cameras"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpm", description="Mixed-precision person re-identification.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"bpm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        # Redirected to a file, stdout is block-buffered: a 30-minute export or training run would show
        # nothing in its log until the end, or a crash, in a half-written buffer.
        sys.stdout.reconfigure(line_buffering=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] not in SUBCOMMANDS:
        build_parser().parse_args(argv)  # prints help, the version or the "invalid choice" error and exits
        return 2
    module_name, help_text = SUBCOMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = make_parser(f"bpm {argv[0]}", help_text)
    module.add_arguments(parser)
    if any(action.dest == "config" for action in parser._actions):
        args = parse_args_with_config(parser, argv[1:])  # --config FILE: the file's switches as defaults
    else:
        args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except BpmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Any OS error (a full disk, EPERM on an immutable file, a read-only mount) is one line that
        # says what was kept; only a command that writes checkpoints speaks of one.
        kept = getattr(module, "kept_on_error", None)
        left = kept(args) if kept is not None else "files written before were kept"
        print(f"error: {exc.filename or 'output'}: {exc.strerror or exc}; {left}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
