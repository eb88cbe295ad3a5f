"""``-h`` that shows every switch's default, shared by every parser of the project.

argparse's own :class:`argparse.ArgumentDefaultsHelpFormatter` skips switches without help text
and prints ``(default: None)`` for switches whose value comes from elsewhere (``--recipe``);
this one shows a default for every switch with a value, leaves alone help that already says
where its default comes from, and hides meaningless ``None``/``''`` defaults.
"""
from __future__ import annotations

import argparse


_NO_HELP = "\0"  # placeholder help of a switch that has none: argparse skips empty help


def shown_default(default: object) -> str:
    """A default as the user would type it: a list of words as the comma list the switch takes
    (``pt,pt16,onnx``, not a Python tuple); ``%`` escaped for argparse's help expansion."""
    if isinstance(default, (tuple, list)) and default and all(isinstance(v, str) for v in default):
        shown = ",".join(default)
    else:
        shown = f"'{default}'" if isinstance(default, str) else str(default)
    return shown.replace("%", "%%")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in ``-h``: ``(default: X)`` appended unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = "" if action.help in (None, _NO_HELP) else action.help
        if "default" in text.lower() or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.default is None or action.default == "" or action.nargs == 0:  # -h, --version, flags
            return text
        return f"{text} (default: {shown_default(action.default)})".strip()

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default not in (None, "", argparse.SUPPRESS):
            action.help = _NO_HELP  # so argparse renders a help column, which _get_help_string fills with the default
        return super()._format_action(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """A bad switch is one line (``error: argument --net: invalid choice: ...``), as every other input
    error of the project, instead of the whole usage block that would bury it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} -h)\n")


def make_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with no prefix matching (``--lr`` must never silently mean ``--lr_decay_type``),
    defaults in ``-h`` and one-line errors."""
    return OneLineErrorParser(prog=prog, description=description, allow_abbrev=False,
                              formatter_class=HelpFormatter)
