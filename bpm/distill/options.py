"""Checks of the distillation switches, before any work (called by :func:`bpm.cli.checks.check_train`).

Only what can be judged from the switches themselves: the teacher file's content (can it be
loaded, does it take the given input) is checked by :func:`bpm.distill.teacher.open_teacher`,
still before the run folder is touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bpm.distill.input_spec import parse_teacher_input
from bpm.errors import BpmError

WEIGHTS = ("distill_weight", "relational_weight")
# Switches that mean nothing without a teacher.
NEED_TEACHER = ("teacher_input", "teacher_cache", "teacher_per_step", "distill_extra")


def check_distill(switches: Mapping[str, Any]) -> None:
    teacher = switches.get("teacher") or ""
    on = [name for name in WEIGHTS if (switches.get(name) or 0) > 0]
    if not teacher:
        if on:
            because = ("--recipe distill" if switches.get("recipe") == "distill"
                       else f"--{on[0]} {switches.get(on[0])}")
            raise BpmError(f"{because}: needs --teacher FILE, the model to learn from "
                           "(a bpm weights file, an ONNX file or an OpenVINO .xml)")
        for name in NEED_TEACHER:
            if switches.get(name):
                raise BpmError(f"--{name}: only means something with --teacher FILE")
        return
    if not on:
        raise BpmError("--teacher: no distillation term is on; give --distill_weight or --relational_weight "
                       "a positive weight (or use --recipe distill)")
    if not Path(teacher).is_file():
        raise BpmError(f"--teacher: {teacher} not found")
    if switches.get("teacher_input"):
        parse_teacher_input(switches["teacher_input"])
    extra = switches.get("distill_extra")
    if extra and not Path(extra).is_dir():
        raise BpmError(f"--distill_extra: {extra} is not a folder")
    per_batch = switches.get("distill_extra_per_batch") or 0
    if per_batch < 0:
        raise BpmError(f"--distill_extra_per_batch: expected 0 (half the labelled batch) or more, got {per_batch}")
