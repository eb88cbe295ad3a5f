"""Tiny ONNX teachers generated on the spot (tests make their own files)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch


class TinyTeacher(torch.nn.Module):
    """Colour-sensitive on purpose: per-channel means and a strided conv, then a linear map to ``dim``."""

    def __init__(self, dim: int = 7) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.fc = torch.nn.Linear(7, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc(torch.cat([pooled, x.mean(dim=(2, 3))], dim=1))


def export_teacher(module: torch.nn.Module, path: Path, size: tuple[int, int], batch_axis: bool = True) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.zeros(2 if batch_axis else 1, 3, *size), str(path),
                          input_names=["input"], output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "n"}, "output": {0: "n"}} if batch_axis else None)
    return path
