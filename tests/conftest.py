"""Shared fixtures: a tiny synthetic world in Market-1501 layout, generated once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from bpm.data.synthetic import generate_world
from train_helpers import TINY_WORLD


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("world") / "tiny", TINY_WORLD)
