"""Checkpoints and released weights know their input (size, stride, normalisation, network, recipe, neck),
and every reader uses it unless told otherwise; files without it keep today's defaults."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bpm.cli import main
from bpm.commands import train
from bpm.data.datasets.common import list_image_names
from bpm.models.onnx_graph import read_spec
from bpm.export.pipeline import ExportOptions, run_export
from bpm.inference import FeatureExtractor
from bpm.models.meta import stored_meta
from bpm.models.loading import load_model
from train_helpers import train_args


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    """A checkpoint trained at 64x32 (one epoch of the tiny world, bot recipe: BNNeck)."""
    exp = tmp_path_factory.mktemp("meta") / "run"
    args = train_args(tiny_world, exp, "--total_epochs", "1", "--recipe", "bot", "--sampler_epoch", "ids")
    assert train.run(args) == 0
    return exp / "ckpt.pth"


def _images(world, count=4):
    folder = world / "query"
    return [str(folder / n) for n in list_image_names(folder)[:count]]


def test_checkpoint_stores_its_input_settings(trained):
    meta = torch.load(trained, weights_only=True)["input"]
    assert meta["resize_h_w"] == [64, 32] and meta["last_conv_stride"] == 1 and meta["net"] == "mobilenet_v2"
    assert meta["neck"] == "bnneck" and meta["recipe"] == "bot" and meta["feature_dim"] == 1280
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3 and meta["normalize_features"] is True


def test_bpm_test_without_resize_uses_the_checkpoints(trained, tiny_world, tmp_path, capsys):
    code = main(["test", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--exp_dir",
                 str(tmp_path / "t"), "--model_weight_file", str(trained), "--workers", "0", "--rerank", "false",
                 "--log_to_file", "false"])
    out = capsys.readouterr()
    assert code == 0 and "input 64x32" in out.out and "warning" not in out.err
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["resize_h_w"] == [64, 32] and config["versions"]["device"] == "cpu"
    assert json.loads((tmp_path / "t" / "results.json").read_text())["versions"]["bpm"]


def test_feature_extractor_uses_the_stored_size_and_warns_on_a_different_one(trained, tiny_world, capsys):
    assert FeatureExtractor(trained).resize_h_w == (64, 32)
    assert "warning" not in capsys.readouterr().err
    extractor = FeatureExtractor(trained, resize_h_w=(128, 64))
    assert extractor.resize_h_w == (128, 64)
    assert "warning: --resize_h_w (128, 64) differs from the (64, 32)" in capsys.readouterr().err


def test_old_checkpoint_without_settings_keeps_todays_defaults(trained, tmp_path, capsys):
    ckpt = torch.load(trained, weights_only=True)
    del ckpt["input"]
    old = tmp_path / "old.pth"
    torch.save(ckpt, old)
    model, spec = load_model(old, net="mobilenetV2")
    assert model.source_meta == {} and model.architecture["neck"] == "bnneck"
    assert spec.neck == "bnneck" and spec.normalize_features and spec.resize_h_w == (256, 128)
    assert FeatureExtractor(old).resize_h_w == (256, 128)
    assert "warning" not in capsys.readouterr().err


def test_released_weights_files_carry_the_settings(trained, tiny_world, tmp_path):
    run_export(ExportOptions(weights=str(trained), out_dir=str(tmp_path), formats=("pt", "safetensors", "onnx"),
                             calib_images=str(tiny_world / "bounding_box_train"), verify_count=4), log=lambda _: None)
    pt, st = tmp_path / "mobilenet_v2_64x32_fp32.pt", tmp_path / "mobilenet_v2_64x32_fp32.safetensors"
    raw = torch.load(pt, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in raw.values())  # still a plain state_dict
    assert stored_meta(raw)["resize_h_w"] == [64, 32]
    for path in (pt, st):
        extractor = FeatureExtractor(path)
        assert extractor.resize_h_w == (64, 32) and extractor.net == "mobilenet_v2"
    onnx_meta = json.loads(read_spec(tmp_path / "mobilenet_v2_64x32_fp32.onnx").input_meta)
    assert onnx_meta["resize_h_w"] == [64, 32] and onnx_meta["neck"] == "bnneck" and onnx_meta["recipe"] == "bot"
    reference = FeatureExtractor(trained)(_images(tiny_world))
    np.testing.assert_allclose(FeatureExtractor(pt)(_images(tiny_world)), reference, rtol=1e-4, atol=1e-5)


def test_feature_extractor_takes_a_tensor_batch(trained, tiny_world):
    from PIL import Image

    paths = _images(tiny_world, 3)
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((32, 64))) for p in paths]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    extractor = FeatureExtractor(trained)
    expected = extractor(arrays)
    np.testing.assert_allclose(extractor(batch), expected, atol=1e-5)
    np.testing.assert_allclose(extractor(batch.float() / 255), expected, atol=1e-3)
    assert extractor(batch[0]).shape == (1, 1280)
