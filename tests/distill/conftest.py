"""A tiny ONNX teacher, exported once per session (tests make their own files)."""
from __future__ import annotations

from pathlib import Path

import pytest

from teacher_helpers import TinyTeacher, export_teacher


@pytest.fixture(scope="session")
def tiny_teacher_onnx(tmp_path_factory) -> tuple[Path, TinyTeacher]:
    """A 48x24 input, 7-d output ONNX teacher and the module it was exported from."""
    module = TinyTeacher(7)
    return export_teacher(module, tmp_path_factory.mktemp("teacher") / "tiny.onnx", (48, 24)), module
