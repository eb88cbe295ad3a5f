"""A new backbone is one decorated builder: registered here, in the test file alone, a toy network
trains one step and exports to ONNX through the normal paths, with its own input normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bpm
from bpm.commands import train
from bpm.data.datasets.common import list_image_names
from bpm.export.pipeline import ExportOptions, run_export
from bpm.models import registry
from bpm.models.registry import register_backbone
from train_helpers import train_args

LITE_MEAN = (127 / 255,) * 3  # EfficientNet-Lite's (x - 127) / 128, for pixels in [0, 1]
LITE_STD = (128 / 255,) * 3


class ToyTrunk(nn.Module):
    def __init__(self, last_conv_stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.stem(x)))


@pytest.fixture
def toy_net(monkeypatch):
    registry.list_backbones()
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))  # nothing leaks into other tests
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    register_backbone("toy_net", aliases=("toyNet",), feature_dim=8, mean=LITE_MEAN, std=LITE_STD,
                      first_conv_key="stem.weight", classifier_prefix="fc.", imagenet_file="toy_net-00000000.pth",
                      imagenet_to_trunk=lambda state: {k: v for k, v in state.items() if not k.startswith("fc.")},
                      )(ToyTrunk)
    return "toy_net"


def test_a_registered_toy_backbone_trains_and_exports(toy_net, tiny_world, tmp_path):
    exp = tmp_path / "run"
    args = train_args(tiny_world, exp, "--net", "toyNet", "--total_epochs", "1", "--ids_per_batch", "16",
                      "--recipe", "bot", "--sampler_epoch", "ids")
    assert train.run(args) == 0
    ckpt = torch.load(exp / "ckpt.pth", weights_only=True)
    assert ckpt["global_step"] == 1 and ckpt["net"] == "toy_net"
    assert ckpt["input"]["mean"] == list(LITE_MEAN) and ckpt["input"]["std"] == list(LITE_STD)

    out = tmp_path / "export"
    result = run_export(ExportOptions(weights=str(exp / "ckpt.pth"), out_dir=str(out), formats=("pt", "onnx"),
                                      calib_images=str(tiny_world / "bounding_box_train"), verify_count=4),
                        log=lambda line: None)
    assert all(check.passed for check in result["checks"])
    onnx_file = result["files"]["onnx"]
    assert onnx_file.name == "toy_net_64x32_fp32.onnx"
    model, spec = bpm.load_model(onnx_file)
    assert spec.net == "toy_net" and spec.mean == LITE_MEAN and spec.neck == "bnneck" and spec.normalize_features

    folder = tiny_world / "query"
    images = [str(folder / n) for n in list_image_names(folder)[:4]]
    from_onnx = bpm.FeatureExtractor(onnx_file)(images)
    from_ckpt = bpm.FeatureExtractor(exp / "ckpt.pth")(images)
    assert from_onnx.shape == (4, 8)
    np.testing.assert_allclose(from_onnx, from_ckpt, rtol=1e-4, atol=1e-5)
