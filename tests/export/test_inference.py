"""bpm.FeatureExtractor, `bpm extract` and the original's folder-features script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

import bpm
from bpm.cli import main
from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, export_onnx
from bpm.export.verify import cosine_rows

from export_helpers import SIZE


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, mobilenet):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    return export_onnx(mobilenet, path, OnnxSpec("mobilenetV2", SIZE, bake_normalization=True))


def test_extractor_accepts_paths_pil_and_arrays(original_ckpt, image_paths):
    extractor = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE, batch_size=3)
    from_paths = extractor(image_paths[:5])
    assert from_paths.shape == (5, 1280) and from_paths.dtype == np.float32
    pil = [Image.open(p).convert("RGB") for p in image_paths[:5]]
    np.testing.assert_allclose(extractor(pil), from_paths, rtol=1e-4, atol=1e-4)
    arrays = np.stack([np.asarray(im.resize((32, 64))) for im in pil])
    assert extractor(arrays).shape == (5, 1280)
    assert extractor(image_paths[0]).shape == (1, 1280)
    np.testing.assert_allclose(extractor(pil[0]), from_paths[:1], rtol=1e-4, atol=1e-4)


def test_onnx_backend_matches_torch_backend(original_ckpt, onnx_file, image_paths):
    torch_features = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE)(image_paths[:6])
    onnx_extractor = bpm.FeatureExtractor(onnx_file)
    assert onnx_extractor.backend == "onnx" and onnx_extractor.resize_h_w == SIZE
    assert cosine_rows(onnx_extractor(image_paths[:6]), torch_features).min() > 0.9999


def test_extractor_errors_are_clear(original_ckpt, onnx_file):
    with pytest.raises(BpmError, match="holds mobilenetV2"):
        bpm.FeatureExtractor(onnx_file, net="resnet50")
    with pytest.raises(BpmError, match="--opt-level applies to the torch backend"):
        bpm.FeatureExtractor(onnx_file, opt_level="O2")
    with pytest.raises(BpmError, match="needs an exported .onnx"):
        bpm.FeatureExtractor(original_ckpt, backend="onnx")


def test_bpm_extract_writes_features_names_and_ids(tmp_path, original_ckpt, world):
    out = tmp_path / "feats.h5"
    folder = world / "query"
    assert main(["extract", "--weights", str(original_ckpt), "--images", str(folder), "--out", str(out),
                 "--resize_h_w", "(64, 32)", "--batch_size", "4"]) == 0
    with h5py.File(out) as handle:
        names = [n.decode() for n in handle["names"][:]]
        assert names == sorted(p.name for p in folder.iterdir())
        assert handle["features"].shape == (len(names), 1280)
        assert handle["pids"][0] == int(names[0].split("_")[0])
        assert handle["camids"][0] == int(names[0].split("_c")[1][0])


def test_bpm_extract_onnx_backend_to_mat(tmp_path, onnx_file, world):
    out = tmp_path / "feats.mat"
    assert main(["extract", "--weights", str(onnx_file), "--images", str(world / "query"), "--out", str(out)]) == 0
    mat = loadmat(str(out))
    assert mat["features"].shape[1] == 1280 and len(mat["names"]) == mat["features"].shape[0]


def test_bpm_extract_rejects_bad_output_suffix(tmp_path, original_ckpt, world, capsys):
    assert main(["extract", "--weights", str(original_ckpt), "--images", str(world / "query"),
                 "--out", str(tmp_path / "feats.txt")]) == 2
    assert "expected a file ending in .h5" in capsys.readouterr().err


@pytest.mark.slow
def test_original_infer_images_example_script(tmp_path, original_ckpt, world):
    script = Path(__file__).resolve().parents[2] / "script" / "experiment" / "infer_images_example.py"
    out = tmp_path / "features"
    done = subprocess.run([sys.executable, str(script), "-d", "()", "--resize_h_w", "(64, 32)",
                           "--ckpt_file", str(original_ckpt), "--saved_feature_mat_file", str(out),
                           "--image_dir", str(world / "query"), "--net", "mobilenetV2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    mat = loadmat(str(tmp_path / "features.mat"))
    assert mat["features"].shape[1] == 1280
    assert len(mat["names"]) == mat["features"].shape[0] and str(mat["names"][0][0][0]).endswith(".jpg")


def test_extractor_honours_opt_level(original_ckpt, image_paths):
    fp32 = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE)(image_paths[:4])
    # float16, not the CPU default bfloat16: its 8-bit mantissa moves an untrained network's output too far.
    half = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE, opt_level="O2", amp_dtype="float16")
    assert half.policy.casts_weights
    assert cosine_rows(half(image_paths[:4]), fp32).min() > 0.99
