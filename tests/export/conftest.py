"""Shared fixtures: a tiny rendered image world and a small MobileNet-V2 whose BatchNorm statistics
come from real images (a randomly initialised network overflows FP16 and has meaningless ranges)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bpm.data.datasets.common import list_image_names
from bpm.data.synthetic import WorldConfig, generate_world
from bpm.data.transforms import image_batch
from bpm.models.reid import build_model
from export_helpers import SIZE


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    config = WorldConfig(num_train_ids=6, num_test_ids=4, num_distractors=4, num_junk=0, seed=3)
    return generate_world(tmp_path_factory.mktemp("export") / "world", config)


@pytest.fixture(scope="session")
def image_paths(world) -> list[str]:
    folder = world / "bounding_box_train"
    return [str(folder / n) for n in list_image_names(folder)]


def calibrated_model(net: str, paths: list[str], seed: int = 0) -> torch.nn.Module:
    """A deterministic model with BatchNorm running statistics measured on ``paths``."""
    torch.manual_seed(seed)
    model = build_model(net)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for i in range(0, len(paths), 16):
            model(torch.from_numpy(image_batch(paths[i:i + 16], SIZE)))
    return model.eval()


@pytest.fixture(scope="session")
def mobilenet(image_paths) -> torch.nn.Module:
    return calibrated_model("mobilenetV2", image_paths)


@pytest.fixture(scope="session")
def original_ckpt(tmp_path_factory, mobilenet) -> Path:
    """The original's checkpoint layout: {'state_dicts': [model, optimizer], 'ep', 'scores'}."""
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pth"
    optimizer = torch.optim.Adam(mobilenet.parameters(), lr=2e-4)
    torch.save({"state_dicts": [mobilenet.state_dict(), optimizer.state_dict()], "ep": 300, "scores": 0.0}, path)
    return path
