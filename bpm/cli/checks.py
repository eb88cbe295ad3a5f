"""Check every switch's value before any work, so a bad value is one line in seconds, not a traceback
(or a ZeroDivisionError) after hours of training.

The checks read the parsed switches as a plain mapping (``vars(args)``). Why a separate pass rather
than argparse ``type=`` functions: several switches are shared by
``bpm train``, ``bpm test``, ``bpm visualize`` and the original's scripts, recipes fill some of
them after parsing, and a few rules involve two switches (``--margin`` with ``--soft_margin``).
Each rule says what was expected, naming the switch, in the project's ``error:`` style.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from bpm.errors import BpmError
from bpm.models.input_spec import check_input_size


def _value(switches: Mapping[str, Any], name: str) -> Any:
    return switches.get(name)


def _need(ok: bool, flag: str, expected: str, value: Any) -> None:
    if not ok:
        raise BpmError(f"--{flag}: expected {expected}, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_common(switches: Mapping[str, Any]) -> None:
    """Switches of every command that reads images: input size, loader workers, test batch size."""
    size = _value(switches, "resize_h_w")
    if size is not None:
        check_input_size(size)
    workers = _value(switches, "workers")
    if workers is not None:
        _need(workers >= 0, "workers", "0 (load in the main process) or more worker processes", workers)
    for name in ("batch_size_test", "batch_size"):
        value = _value(switches, name)
        if value is not None:
            _need(value >= 1, name, "at least 1 image per batch", value)


def check_train(switches: Mapping[str, Any]) -> None:
    """Training switches (after :func:`bpm.cli.switches.apply_recipe` filled the recipe's)."""
    check_common(switches)
    from bpm.losses.term import LOSS_TERMS

    positive = ("base_lr",)
    term_weights = tuple(LOSS_TERMS.get(name).weight_switch for name in LOSS_TERMS.names())  # every loss term's
    non_negative = ("weight_decay", "total_epochs", "ckpt_every_steps", "steps_per_log", "warmup_epochs", "pad_crop",
                    *term_weights)
    probabilities = ("crop_prob", "erase_prob")
    for name in positive:
        value = _value(switches, name)
        if value is not None:
            _need(_finite(value) and value > 0, name, "a positive finite number", value)
    for name in non_negative:
        value = _value(switches, name)
        if value is not None:
            _need(_finite(value) and value >= 0, name, "a finite number >= 0", value)
    for name in probabilities:
        value = _value(switches, name)
        if value is not None:
            _need(_finite(value) and 0 <= value <= 1, name, "a probability from 0 to 1", value)
    smoothing = _value(switches, "label_smoothing")
    if smoothing is not None:
        _need(_finite(smoothing) and 0 <= smoothing < 1, "label_smoothing", "a number from 0 to below 1", smoothing)
    momentum = _value(switches, "momentum")
    if momentum is not None:
        _need(_finite(momentum) and 0 <= momentum < 1, "momentum", "a number from 0 to below 1", momentum)
    crop_ratio = _value(switches, "crop_ratio")
    if crop_ratio is not None:
        _need(_finite(crop_ratio) and 0 < crop_ratio <= 1, "crop_ratio", "a fraction in (0, 1]", crop_ratio)
    # A margin <= 0 makes the hinge never (or always) active: not a ranking loss. --soft_margin has none.
    margin = _value(switches, "margin")
    if margin is not None and not _value(switches, "soft_margin"):
        _need(_finite(margin) and margin > 0, "margin", "a positive number (or --soft_margin true)", margin)
    every = _value(switches, "epochs_per_val")
    if every is not None:
        # Validation runs when the epoch count is a multiple of it: a whole number of epochs, or
        # anything >= 1e9 / inf / 0 for never. 0.5 used to divide by zero after the first epoch.
        never = not math.isfinite(every) or every == 0 or every >= 1e9
        _need(never or (every >= 1 and float(every).is_integer()), "epochs_per_val",
              "a whole number of epochs >= 1 (0 or the default: never)", every)
    steps = _value(switches, "max_nonfinite_steps")
    if steps is not None:
        _need(steps >= 1, "max_nonfinite_steps", "at least 1 consecutive skipped step before stopping", steps)
    timeout = _value(switches, "dist_timeout")
    if timeout is not None:
        _need(_finite(timeout) and timeout > 0, "dist_timeout", "a positive number of seconds", timeout)
    from bpm.distill.options import check_distill

    check_distill(switches)
