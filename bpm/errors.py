"""The one exception type users see.

Every problem caused by user input (a missing folder, a bad flag value, a weights file for the
wrong network) is raised as :class:`BpmError` with a single-line message naming the file or flag
and what was expected. The command-line front end prints it as ``error: <message>`` and exits
with status 2, so scripts can tell user errors from crashes (tracebacks, status 1).
"""
import sys
from typing import Callable


class BpmError(Exception):
    """A user-facing error whose message is one line naming the culprit and the expectation."""


def one_line(exc: BaseException, empty: str = "") -> str:
    """The first line of a library's exception message, to quote inside a :class:`BpmError`.

    Args:
        exc: the exception caught (ONNX Runtime, OpenVINO, torch.distributed, a download ...).
        empty: what to say when the message is empty; default: the exception's type name.

    Returns:
        One stripped line, never empty.
    """
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else (empty or type(exc).__name__)


def exit_code_of(work: Callable[[], None]) -> int:
    """Run a script's ``work``: 0 on success, or print a :class:`BpmError` as one ``error:`` line and give 2.

    The original's stand-alone scripts use this so their failures read like the ``bpm`` command's.
    """
    try:
        work()
    except BpmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, EPERM, a read-only mount: one line, as the bpm command does
        print(f"error: {exc.filename or 'output'}: {exc.strerror or exc}; files written before were kept",
              file=sys.stderr)
        return 2
    return 0
