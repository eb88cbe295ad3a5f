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
import bpm.evaluation.features as features_module
import bpm.export.formats.onnx as onnx_formats
import bpm.export.pipeline as pipeline
from bpm.cli import main
from bpm.data.records import ImageRecord
from bpm.errors import BpmError
from bpm.evaluation.features import extract_features
from bpm.precision import PrecisionPolicy
from bpm.export.onnx import OnnxSpec, export_onnx
from bpm.settings import ModelSettings
from bpm.export.pipeline import ExportOptions, run_export
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
    with pytest.raises(BpmError, match="holds mobilenetV2, but --net is resnet50"):
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
    with h5py.File(out) as handle:  # a plain folder: one <folder name>/images group
        assert list(handle) == ["query"] and list(handle["query"]) == ["images"]
        group = handle["query/images"]
        names = [n.decode() for n in group["names"][:]]
        assert names == sorted(p.name for p in folder.iterdir())
        assert group["features"].shape == (len(names), 1280)
        assert group["pids"][0] == int(names[0].split("_")[0])
        assert group["camids"][0] == int(names[0].split("_c")[1][0])
        assert handle.attrs["format_version"] == 2 and handle.attrs["command"] == "bpm extract"


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


# ------------------------------------------------------------------ one extraction path for all three users


@pytest.fixture
def embed_calls(monkeypatch) -> list[int]:
    """Batch sizes seen by the one extraction path (bpm.evaluation.features.embed_batch)."""
    calls: list[int] = []
    original = features_module.embed_batch

    def spy(model, images, *args, **kwargs):
        calls.append(len(images))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(features_module, "embed_batch", spy)
    return calls


def _export_reference(tmp_path, original_ckpt, world, monkeypatch) -> tuple[list[str], np.ndarray]:
    """The verification images and reference features of a real `bpm export` run (pt only)."""
    seen: list[tuple[list[str], np.ndarray]] = []
    original = pipeline.embed_images

    def recording(model, items, *args, **kwargs):
        seen.append((list(items), original(model, items, *args, **kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(pipeline, "embed_images", recording)
    run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path / "export"),
                             model=ModelSettings(resize_h_w=SIZE),
                             formats=("pt",), calib_images=str(world / "bounding_box_train"), verify_count=8,
                             batch_size=4),
               log=lambda line: None)
    return seen[0]


def test_extractor_evaluation_and_export_compute_identical_features(tmp_path, original_ckpt, mobilenet, world,
                                                                    monkeypatch, embed_calls):
    """FeatureExtractor on files == bpm test's extraction of the same records == bpm export's reference,
    bit for bit on CPU at O0, and all three go through embed_batch."""
    paths, reference = _export_reference(tmp_path, original_ckpt, world, monkeypatch)
    assert len(paths) == 8 and embed_calls == [4, 4, 4, 4]  # the reference, then the reloaded .pt file
    del embed_calls[:]
    from_files = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE, batch_size=4)(paths)
    assert embed_calls == [4, 4]
    records = [ImageRecord(p, 0, 0) for p in paths]
    evaluation = extract_features(mobilenet, records, PrecisionPolicy.create("O0"), SIZE, batch_size=4, workers=0)
    assert embed_calls == [4, 4, 4, 4]
    assert np.array_equal(from_files, reference) and np.array_equal(evaluation, reference)


@pytest.mark.parametrize("flip,normalize", [(True, False), (False, True), (True, True)])
def test_flip_and_normalize_are_honoured_alike(original_ckpt, mobilenet, image_paths, flip, normalize):
    paths = image_paths[:6]
    extractor = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE, batch_size=3, flip=flip, normalize=normalize)
    got = extractor(paths)
    records = [ImageRecord(p, 0, 0) for p in paths]
    evaluation = extract_features(mobilenet, records, PrecisionPolicy.create("O0"), SIZE, batch_size=3, workers=0,
                                  flip=flip, normalize=normalize)
    assert np.array_equal(got, evaluation)
    plain = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE, batch_size=3)
    want = plain(paths)
    if flip:
        mirrored = [np.asarray(Image.open(p).convert("RGB"))[:, ::-1] for p in paths]
        want = (want + plain(mirrored)) / 2
    if normalize:
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_onnx_backend_takes_the_one_path_with_flip_and_normalize(onnx_file, image_paths, embed_calls):
    plain = bpm.FeatureExtractor(onnx_file, batch_size=4)
    base = plain(image_paths[:6])
    assert embed_calls == [4, 2]
    mirrored = [np.asarray(Image.open(p).convert("RGB"))[:, ::-1] for p in image_paths[:6]]
    both = bpm.FeatureExtractor(onnx_file, batch_size=4, flip=True, normalize=True)(image_paths[:6])
    want = (base + plain(mirrored)) / 2
    np.testing.assert_allclose(both, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)


def test_export_verifies_onnx_files_with_what_the_extractor_computes(tmp_path, original_ckpt, world, monkeypatch,
                                                                     embed_calls):
    seen: list[tuple[list[str], np.ndarray]] = []
    original = onnx_formats.onnx_features

    def recording(runner, items, batch_size=32):
        seen.append((list(items), original(runner, items, batch_size)))
        return seen[-1][1]

    monkeypatch.setattr(onnx_formats, "onnx_features", recording)
    result = run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path),
                                      model=ModelSettings(resize_h_w=SIZE),
                                      formats=("onnx",), calib_images=str(world / "bounding_box_train"),
                                      verify_count=8, batch_size=4), log=lambda line: None)
    paths, checked = seen[0]
    assert len(paths) == 8 and embed_calls == [4, 4, 4, 4]  # the torch reference, then the ONNX file
    assert np.array_equal(checked, bpm.FeatureExtractor(result["files"]["onnx"], batch_size=4)(paths))
