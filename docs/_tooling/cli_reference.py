"""The command-line reference, generated from the argparse parsers when the site is built.

A hand-written list of switches drifts from the code; this page cannot: it walks the parsers the
commands themselves build (``bpm.cli.SUBCOMMANDS``, the original's scripts) and renders each
switch with the help text ``-h`` prints, default included. MkDocs runs :func:`on_files` (a hook,
``hooks:`` in ``mkdocs.yml``), which adds the page as ``reference/cli.md``. ``tests/docs`` uses
:func:`all_parsers` to check that every switch has help text.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
PAGE = "reference/cli.md"


@dataclass(frozen=True)
class Command:
    """One command line a user can type, and the parser behind it."""

    title: str          # what the user types: "bpm train", "script/experiment/train.py"
    parser: argparse.ArgumentParser
    note: str = ""      # how it relates to another command, when it does


def bpm_parser(name: str) -> argparse.ArgumentParser:
    """The parser ``bpm NAME`` parses with, built exactly as :func:`bpm.cli.main` builds it."""
    from bpm.cli import SUBCOMMANDS
    from bpm.cli.helpformat import make_parser

    module_name, help_text = SUBCOMMANDS[name]
    parser = make_parser(f"bpm {name}", help_text)
    importlib.import_module(module_name).add_arguments(parser)
    return parser


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _script(relative: str) -> object:
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"_bpm_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parser_built_by(main: Callable[[], object], prog: str) -> argparse.ArgumentParser:
    """The parser a script's ``main()`` builds, taken at the moment it would parse (nothing runs)."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, *args, **kwargs):
        raise _Parsed(self)

    argparse.ArgumentParser.parse_args = stop
    try:
        main()
    except _Parsed as parsed:
        parsed.parser.prog = prog
        return parsed.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"{prog}: main() returned without parsing its command line")


def bpm_commands() -> Iterator[Command]:
    from bpm.cli import SUBCOMMANDS

    for name in SUBCOMMANDS:
        yield Command(f"bpm {name}", bpm_parser(name))


def script_commands() -> Iterator[Command]:
    """The original's entry points: two are ``bpm`` commands under another name, the rest own parsers."""
    yield Command("script/experiment/train.py", bpm_parser("train"),
                  "The switches of `bpm train`; the only difference is that `--recipe` defaults to `original`.")
    yield Command("script/experiment/visualize_rank_list.py", bpm_parser("visualize"),
                  "The switches of `bpm visualize`.")
    from bpm.commands.extract_weights import build_parser

    parser = build_parser()
    parser.prog = "script/experiment/extract_weights.py"
    yield Command(parser.prog, parser)
    parser = _script("script/experiment/infer_images_example.py").build_parser()
    parser.prog = "script/experiment/infer_images_example.py"
    yield Command(parser.prog, parser)
    for name in ("transform_market1501", "transform_duke", "transform_cuhk03", "combine_trainval_sets"):
        relative = f"script/dataset/{name}.py"
        yield Command(relative, _parser_built_by(_script(relative).main, relative))


def all_parsers() -> list[Command]:
    """Every command line of the project with its parser: ``bpm`` subcommands first, then scripts."""
    return [*bpm_commands(), *script_commands()]


def switches(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's arguments a user gives (``-h`` left out)."""
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help ``-h`` prints for ``action``, default included (the project's formatter decides)."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def _cell(text: str) -> str:
    """Table-cell safe Markdown: pipes, angle brackets and asterisks would change the table."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("*", "\\*"))


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "(flag)"
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    return f"`{metavar}`"


def render_command(command: Command, level: int = 2) -> str:
    parser = command.parser
    lines = [f"{'#' * level} `{command.title}`", ""]
    if parser.description:
        lines += [parser.description[0].upper() + parser.description[1:] + ".", ""]
    if command.note:
        lines += [command.note, ""]
    rows = switches(parser)
    if not rows:
        return "\n".join(lines + ["No switches.", ""])
    lines += ["| switch | value | what it does |", "|---|---|---|"]
    for action in rows:
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}` (positional)"
        if action.required:
            names += " (required)"
        lines.append(f"| {names} | {_value(action)} | {_cell(help_text(parser, action))} |")
    return "\n".join(lines + [""])


def render() -> str:
    from bpm.cli import SUBCOMMANDS

    commands = all_parsers()
    bpm = [c for c in commands if c.title.startswith("bpm ")]
    scripts = [c for c in commands if not c.title.startswith("bpm ")]
    summary = "\n".join(f"| [`bpm {name}`](#bpm-{name}) | {_cell(help_)} |"
                        for name, (_, help_) in SUBCOMMANDS.items())
    parts = [
        "# Command-line reference",
        "",
        "Generated from the argparse definitions when this site was built: every switch of every",
        "command, with the help text and default that `-h` prints. Switches are never abbreviated;",
        "booleans take `true`/`false` (also `yes`/`no`, `1`/`0`), and tuples take Python-tuple text",
        "such as `'(256, 128)'`. Training and test commands also take `--config FILE` (a JSON file of",
        "switches, such as a run's `config.json`; switches typed on the command line win).",
        "",
        "| command | what it does |",
        "|---|---|",
        summary,
        "",
        *[render_command(c) for c in bpm],
        "## The original's scripts",
        "",
        "The 2019 code base's entry points keep their switches (see",
        "[The original's command lines](../guide/original.md)).",
        "",
        *[render_command(c, level=3) for c in scripts],
    ]
    return "\n".join(parts)


def on_files(files, config):
    """MkDocs hook: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
