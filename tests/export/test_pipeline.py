"""bpm export end to end on a tiny model: every format written, reloaded/run, and within its threshold."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from bpm.errors import BpmError
from bpm.export.formats import default_formats
from bpm.export.pipeline import ExportOptions, parse_formats, run_export
from bpm.data.transforms import image_batch
from bpm.models.onnx_graph import OnnxModel
from bpm.settings import ModelSettings
from bpm.export.verify import COSINE_THRESHOLDS, cosine_rows
from bpm.models.weights import read_weights_file

from export_helpers import SIZE


# These are mechanics tests on an untrained network, whose response to 8-bit rounding is chaotic and
# depends on the CPU: ONNX Runtime's u8 x s8 kernels sum in saturating 16-bit lanes on AVX2 without
# VNNI (mean cosine 0.64 seen there, 0.8 on AVX-512-VNNI). So INT8 *accuracy* is not asserted here
# (no threshold: any finite cosine passes); it is checked on a trained network in
# test_int8_trained.py. FP32/FP16 thresholds do not depend on the instruction set and stay.
NO_INT8_THRESHOLD = -1.0


def _export(out, original_ckpt, calib_folder):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(COSINE_THRESHOLDS, "int8", NO_INT8_THRESHOLD)
        return run_export(ExportOptions(
            weights=str(original_ckpt), out_dir=str(out), model=ModelSettings(resize_h_w=SIZE),
            calib_images=str(calib_folder), calib_count=32, verify_count=16, threads=2,
        ), log=lambda line: None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, original_ckpt, world):
    out = tmp_path_factory.mktemp("out")
    return out, _export(out, original_ckpt, world / "bounding_box_train")


def _threshold(precision: str) -> float:
    return NO_INT8_THRESHOLD if precision == "int8" else COSINE_THRESHOLDS[precision]


def test_every_format_is_written_and_verified(exported):
    out, result = exported
    assert set(result["files"]) == set(default_formats())
    for path in result["files"].values():
        assert path.is_file() and path.stat().st_size > 0
    names = sorted(p.name for p in out.iterdir())
    assert "mobilenet_v2_64x32_int8.onnx" in names and "mobilenet_v2_64x32_fp16.onnx" in names
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] is True
    assert {row["format"] for row in report["formats"]} == set(default_formats())
    for row in report["formats"]:
        assert row["cosine_mean"] >= _threshold(row["precision"])
        assert -1.0 - 1e-6 <= row["cosine_mean"] <= 1.0 + 1e-6
    assert "alternate images for calibration and verification" in report["images"]
    assert report["calibration_images"] == 32 and report["verification_images"] == 16


def test_weights_files_have_the_expected_precision(exported):
    out, result = exported
    fp32 = read_weights_file(result["files"]["pt"])
    fp16 = read_weights_file(result["files"]["pt16"])
    assert all(k.startswith("base.features.") for k in fp32)
    assert {v.dtype for v in fp32.values() if v.is_floating_point()} == {torch.float32}
    conv = "base.features.0.0.weight"
    bn = "base.features.0.1.weight"
    assert fp16[conv].dtype == torch.float16
    assert fp16[bn].dtype == torch.float32  # keep_batchnorm_fp32, as the original's O2 releases
    safe = read_weights_file(result["files"]["safetensors"])
    assert torch.equal(safe[conv], fp32[conv])


@pytest.mark.parametrize("fmt", ["onnx", "onnx16", "onnx_int8"])
def test_onnx_dynamic_batch_matches_torch(exported, mobilenet, image_paths, fmt):
    _, result = exported
    path = result["files"][fmt]
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim][1:] == [1280]
    runner = OnnxModel(path, threads=2)
    precision = {"onnx": "fp32", "onnx16": "fp16", "onnx_int8": "int8"}[fmt]
    assert runner.spec.precision == precision
    for batch in (1, 7):
        x = image_batch(image_paths[-batch:], SIZE)
        got = runner(x)
        with torch.no_grad():
            want = mobilenet(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 1280) and np.isfinite(got).all()
        assert cosine_rows(got, want).mean() >= _threshold(precision)


def test_mechanics_do_not_depend_on_int8_accuracy(tmp_path, original_ckpt, world):
    """The guard for CPU independence: INT8 numerics differ by instruction set, so the mechanics
    above must pass whatever INT8 accuracy the CPU gives. Calibrating on flat grey images (ranges
    far from the real ones) makes the INT8 model as bad as on the worst CPU; the export must still
    be written, verified and reported, with only its measured cosine showing the damage."""
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 64), (120 + i, 120 + i, 120 + i)).save(flat / f"{i:04d}.jpg")
    result = _export(tmp_path / "out", original_ckpt, flat)
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    int8 = next(row for row in report["formats"] if row["format"] == "onnx_int8")
    assert report["passed"] is True and result["files"]["onnx_int8"].is_file()
    good = next(row for row in report["formats"] if row["format"] == "onnx")
    assert int8["cosine_mean"] < good["cosine_mean"]


def test_failed_threshold_fails_the_command_and_still_writes_the_report(tmp_path, original_ckpt, monkeypatch):
    import bpm.export.verify as verify

    monkeypatch.setitem(verify.COSINE_THRESHOLDS, "fp32", 1.5)
    with pytest.raises(BpmError, match="export check failed for onnx"):
        run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path),
                                 model=ModelSettings(resize_h_w=SIZE),
                                 formats=("onnx",), verify_count=4), log=lambda line: None)
    assert json.loads((tmp_path / "export_report.json").read_text())["passed"] is False


def test_int8_without_calibration_images_is_refused(tmp_path, original_ckpt):
    with pytest.raises(BpmError, match="calibration images"):
        run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path),
                                 model=ModelSettings(resize_h_w=SIZE),
                                 formats=("onnx_int8",)), log=lambda line: None)


def test_parse_formats():
    assert parse_formats("onnx, pt16") == ("onnx", "pt16")
    with pytest.raises(BpmError, match="--formats: unknown format"):
        parse_formats("onnx,tflite")


def test_cosine_rows():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 1.0, -1.0])


def test_a_zero_row_matches_only_a_zero_row():
    # The product of the norms is 0 when either row is zero: an all-zero INT8 output once scored 1.0.
    a = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    b = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 0.0, 0.0])


@pytest.mark.slow
def test_extract_weights_script_keeps_the_original_flags(tmp_path, original_ckpt):
    from bpm.commands.extract_weights import main as extract_weights

    model_file, onnx_file = tmp_path / "w" / "model_weight.pt", tmp_path / "o" / "model.onnx"
    assert extract_weights(["--check_point_file", str(original_ckpt), "--model_file", str(model_file),
                            "--onnx_file", str(onnx_file), "--net", "mobilenetV2", "--resize_h_w", "(64, 32)",
                            "--opt-level", "O2"]) == 0
    assert read_weights_file(model_file)["base.features.0.0.weight"].dtype == torch.float16
    graph = onnx.load(str(onnx_file)).graph
    assert graph.input[0].name == "actual_input_1" and graph.output[0].name == "output1"
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    report = json.loads((onnx_file.parent / "export_report.json").read_text())
    assert report["passed"] and "rendered synthetic pedestrians" in report["images"]


def test_baked_normalization_takes_raw_pixels(tmp_path, original_ckpt, mobilenet, image_paths):
    result = run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path),
                                      model=ModelSettings(resize_h_w=SIZE),
                                      formats=("onnx",), bake_normalization=True, input_name="pixels",
                                      calib_images=str(image_paths[0].rsplit("/", 1)[0]), verify_count=4),
                        log=lambda line: None)
    runner = OnnxModel(result["files"]["onnx"])
    assert runner.spec.bake_normalization and runner.spec.input_name == "pixels"
    raw = image_batch(image_paths[:2], runner.spec.input_spec)
    assert runner.spec.input_spec.raw_pixels
    assert raw.max() > 200
    with torch.no_grad():
        want = mobilenet(torch.from_numpy(image_batch(image_paths[:2], SIZE))).numpy()
    assert cosine_rows(runner(raw), want).min() > 0.9999


def test_cli_rejects_unknown_format_and_missing_weights(tmp_path, capsys):
    from bpm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--weights", "w.pt", "--out", str(tmp_path), "--formats", "onnx,tflite"])
    assert exit_info.value.code == 2 and "unknown format(s) tflite" in capsys.readouterr().err
    assert main(["export", "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path), "--formats", "onnx"]) == 2
    assert "weights file not found" in capsys.readouterr().err


def test_an_onnx_file_is_refused_as_export_source(tmp_path):
    with pytest.raises(BpmError, match="bpm export reads PyTorch weights") as info:
        run_export(ExportOptions(weights=str(tmp_path / "m.onnx"), out_dir=str(tmp_path / "out")))
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
