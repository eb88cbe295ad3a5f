"""OpenVINO IR formats: written, compiled for this CPU, verified like every format, read back by the loader.

The precision an IR runs at depends on the CPU (bf16 with AMX or AVX-512 BF16, else FP32), so no test asserts which:
each asserts that what is reported is what OpenVINO's compiled model says, and accuracy is asserted
with FP32 forced. As for ONNX INT8 (test_pipeline.py), an untrained network's response to 8-bit
and bf16 rounding is not a property of the code: those thresholds are lifted in the mechanics test.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bpm
from bpm.cli import main
from bpm.errors import BpmError
from bpm.export import verify
from bpm.export.pipeline import ExportOptions, run_export
from bpm.data.transforms import image_batch
from bpm.models.onnx_graph import OnnxModel
from bpm.settings import ModelSettings
from bpm.export.verify import cosine_rows

from export_helpers import SIZE

pytestmark = pytest.mark.openvino  # run in their own process by `make test` (see the Makefile)
openvino = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'bpm[openvino]')")
pytest.importorskip("nncf", reason="nncf is not installed (pip install 'bpm[openvino]')")

from bpm.models.openvino_graph import OpenVinoModel  # noqa: E402  (after the skip: needs openvino)


def _export(out, original_ckpt, world, formats):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(verify.COSINE_THRESHOLDS, "int8", -1.0)
        patch.setitem(verify.COSINE_THRESHOLDS, "bf16", -1.0)
        return run_export(ExportOptions(
            weights=str(original_ckpt), out_dir=str(out), model=ModelSettings(resize_h_w=SIZE), formats=formats,
            calib_images=str(world / "bounding_box_train"), calib_count=16, verify_count=8, threads=2,
        ), log=lambda line: None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, original_ckpt, world):
    out = tmp_path_factory.mktemp("ov")
    return out, _export(out, original_ckpt, world, ("onnx", "openvino"))


def test_ir_is_written_verified_and_reports_the_precision_it_runs_at(exported):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "export_report.json", "mobilenet_v2_64x32_fp32.bin", "mobilenet_v2_64x32_fp32.onnx",
        "mobilenet_v2_64x32_fp32.xml"]
    report = json.loads((out / "export_report.json").read_text())
    rows = {row["format"]: row for row in report["formats"]}
    runs_at = OpenVinoModel(result["files"]["openvino"]).inference_precision
    assert runs_at in ("fp32", "bf16", "fp16")
    assert rows["openvino"]["precision"] == runs_at == report["openvino"]["inference_precision"]
    assert all(row["status"] == "verified" for row in rows.values())


@pytest.mark.slow
def test_int8_ir_is_quantised_by_nncf_and_checked_as_int8(tmp_path, original_ckpt, world, image_paths):
    result = _export(tmp_path, original_ckpt, world, ("openvino_int8",))
    report = json.loads((tmp_path / "export_report.json").read_text())
    (row,) = report["formats"]
    assert row["precision"] == "int8" and row["status"] == "verified" and row["file"] == "mobilenet_v2_64x32_int8.xml"
    assert "NNCF" in report["openvino"]["int8"]["method"] and report["openvino"]["int8"]["calibration_images"] == 16
    runner = OpenVinoModel(result["files"]["openvino_int8"])
    assert runner.precision == "int8" and runner.spec.precision == "int8"
    assert np.isfinite(runner(image_batch(image_paths[:2], SIZE))).all()


def test_the_ir_carries_its_input_spec_and_verdict(exported, image_paths):
    _out, result = exported
    runner = OpenVinoModel(result["files"]["openvino"])
    assert runner.metadata["bpm.verification"] == "verified"
    assert "mean cosine" in runner.metadata["bpm.verification_detail"]
    assert runner.spec == OnnxModel(result["files"]["onnx"]).spec  # the same spec as the ONNX file's metadata
    model, spec = bpm.load_model(result["files"]["openvino"])
    assert spec.resize_h_w == SIZE and spec.net == "mobilenet_v2" and model.feature_dim == 1280


def test_fp32_ir_computes_what_onnx_runtime_computes(exported, image_paths):
    _out, result = exported
    x = image_batch(image_paths[:6], SIZE)
    ir = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32")
    assert ir.precision == "fp32"
    assert cosine_rows(ir(x), OnnxModel(result["files"]["onnx"])(x)).min() > 0.9999


@pytest.mark.parametrize("batch", [1, 5, 6])
def test_a_batch_split_across_streams_gives_the_whole_batch_s_features_in_order(exported, image_paths, batch):
    _out, result = exported
    x = image_batch([image_paths[i % len(image_paths)] for i in range(batch)], SIZE)
    whole = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32")
    split = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32", streams=2)
    assert split.streams == 2
    expected = whole(x)  # parts of another size may take other kernels: equal to rounding
    np.testing.assert_allclose(split(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split(x[::-1]), expected[::-1], rtol=1e-5, atol=1e-6)  # parts land in place


def test_batch_sizes_get_fixed_shape_copies_up_to_the_limit_then_the_dynamic_model(exported, image_paths):
    _out, result = exported
    x = image_batch([image_paths[i % len(image_paths)] for i in range(6)], SIZE)
    dynamic = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32", fixed_batches=0)
    fixed = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32", fixed_batches=2)
    for batch in (6, 2, 3, 6):  # the third size finds the limit reached: the dynamic-batch model runs it
        np.testing.assert_allclose(fixed(x[:batch]), dynamic(x[:batch]), rtol=1e-4, atol=1e-5)
    assert sorted(fixed._by_batch) == [2, 6]
    assert [tuple(c.input(0).get_partial_shape().to_shape()) for c in fixed._by_batch.values()] == \
        [(6, 3, *SIZE), (2, 3, *SIZE)]
    assert dynamic._by_batch == {} and fixed.compiled.input(0).get_partial_shape()[0].is_dynamic
    split = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32", streams=2)
    split(x[:1])  # a batch of one runs whole, on the dynamic model: throughput mode keeps one compiled model
    assert split._by_batch == {}


def test_a_model_that_cannot_take_a_fixed_batch_runs_on_the_free_batch(exported, image_paths, monkeypatch):
    _out, result = exported
    x = image_batch(image_paths[:3], SIZE)
    model = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32")
    expected = OpenVinoModel(result["files"]["openvino"], threads=2, inference_precision="fp32", fixed_batches=0)(x)

    def refuse(*args, **kwargs):
        raise RuntimeError("Check 'x' failed at reshape")

    monkeypatch.setattr(model._core, "compile_model", refuse)  # as for a graph with a batch baked into a Reshape
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)
    assert model._by_batch == {} and model._fixed_batches == 0  # never tried again


def test_openvino_reads_an_onnx_file_directly_without_an_ir(exported, image_paths, tmp_path):
    """A model from elsewhere (``bench/infer_speed.py --reference x.onnx``) needs no .bin beside it."""
    import shutil

    _out, result = exported
    onnx_file = Path(shutil.copy(result["files"]["onnx"], tmp_path / "elsewhere.onnx"))
    assert not onnx_file.with_suffix(".bin").exists()
    x = image_batch(image_paths[:6], SIZE)
    runner = OpenVinoModel(onnx_file, threads=2, inference_precision="fp32")
    assert cosine_rows(runner(x), OnnxModel(onnx_file)(x)).min() > 0.9999


def test_feature_extractor_and_extract_run_the_openvino_backend(exported, image_paths, tmp_path):
    _out, result = exported
    xml = result["files"]["openvino"]
    extractor = bpm.FeatureExtractor(xml, batch_size=4)
    assert extractor.backend == "openvino" and extractor.resize_h_w == SIZE
    features = extractor(image_paths[:5])
    assert features.shape == (5, 1280) and np.isfinite(features).all()
    folder = tmp_path / "images"
    folder.mkdir()
    for path in image_paths[:3]:
        (folder / path.rsplit("/", 1)[-1]).write_bytes(open(path, "rb").read())
    assert main(["extract", "--weights", str(xml), "--images", str(folder), "--out", str(tmp_path / "f.h5"),
                 "--backend", "openvino"]) in (0, None)
    with pytest.raises(BpmError, match="the openvino backend needs an OpenVINO IR .xml"):
        bpm.FeatureExtractor(result["files"]["onnx"], backend="openvino")


def test_extraction_with_streams_gives_the_features_of_one_stream(exported, image_paths, tmp_path):
    _out, result = exported
    xml = result["files"]["openvino"]
    whole = bpm.FeatureExtractor(xml, batch_size=4, threads=2)(image_paths[:5])
    split = bpm.FeatureExtractor(xml, batch_size=4, threads=2, streams=2)
    assert split.runner.streams == 2
    # the IR runs at the CPU's default precision (bf16 on some): parts may round differently, not more
    assert cosine_rows(split(image_paths[:5]), whole).min() > 0.9999
    folder = tmp_path / "images"
    folder.mkdir()
    for path in image_paths[:3]:
        (folder / path.rsplit("/", 1)[-1]).write_bytes(open(path, "rb").read())
    assert main(["extract", "--weights", str(xml), "--images", str(folder), "--out", str(tmp_path / "f.h5"),
                 "--streams", "2", "--threads", "2"]) in (0, None)
    with pytest.raises(BpmError, match="--streams applies to the openvino backend; the onnx backend"):
        bpm.FeatureExtractor(result["files"]["onnx"], streams=2)
    with pytest.raises(BpmError, match="--streams: expected at least 1, got 0"):
        bpm.FeatureExtractor(xml, streams=0)


def test_a_refused_ir_keeps_both_files_aside_and_says_so(tmp_path, original_ckpt, world, monkeypatch):
    for precision in ("fp32", "bf16", "fp16"):
        monkeypatch.setitem(verify.COSINE_THRESHOLDS, precision, 1.5)
    with pytest.raises(BpmError, match="export check failed for openvino"):
        run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path), model=ModelSettings(resize_h_w=SIZE),
                                 formats=("openvino",), calib_images=str(world / "bounding_box_train"),
                                 verify_count=4), log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "export_report.json", "mobilenet_v2_64x32_fp32.refused.bin", "mobilenet_v2_64x32_fp32.refused.xml"]
    with pytest.warns(UserWarning, match="refused by bpm export"):
        bpm.FeatureExtractor(tmp_path / "mobilenet_v2_64x32_fp32.refused.xml")


def test_without_openvino_every_use_is_one_line_naming_the_extra(tmp_path, monkeypatch, original_ckpt):
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(BpmError, match=r"needs the openvino package.*pip install 'bpm\[openvino\]'") as error:
        bpm.FeatureExtractor(xml)
    assert "\n" not in str(error.value)
    with pytest.raises(BpmError, match=r"pip install 'bpm\[openvino\]'"):
        run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path / "out"), model=ModelSettings(resize_h_w=SIZE),
                                 formats=("openvino",), verify_count=2), log=lambda line: None)


def test_a_bpm_ir_is_a_teacher_with_its_own_input_spec(exported, image_paths):
    from PIL import Image

    from bpm.distill.teacher import open_teacher

    teacher = open_teacher(exported[1]["files"]["openvino"])
    assert teacher.kind == "bpm OpenVINO IR" and teacher.dim == 1280 and teacher.spec_text == "64x32,bpm"
    assert teacher.embed_images([Image.open(image_paths[0])]).shape == (1, 1280)
    with pytest.raises(BpmError, match="carries its input spec"):
        open_teacher(exported[1]["files"]["openvino"], "64x32")


def _convolution_weight_maxima(ir: Path) -> dict[str, list[int]]:
    """Largest |int8 weight| of each quantised layer of an IR, by the type of layer that reads it."""
    maxima: dict[str, list[int]] = {}
    for op in openvino.Core().read_model(str(ir)).get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == openvino.Type.i8:
            node = op
            while node.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
                node = next(iter(node.output(0).get_target_inputs())).get_node()
            maxima.setdefault(node.get_type_name(), []).append(int(np.abs(op.get_data().astype(np.int32)).max()))
    return maxima


def test_int8_ir_with_seven_bit_weights_keeps_every_convolution_within_64(exported, image_paths, tmp_path):
    from bpm.export.openvino import quantize_ir

    out, result = exported
    source = Path(result["files"]["onnx"])
    spec = OnnxModel(source).spec
    eight = quantize_ir(source, tmp_path / "eight.xml", spec, image_paths[:8])
    seven = quantize_ir(source, tmp_path / "seven.xml", spec, image_paths[:8], weight_bits=7)
    assert (eight["weight_bits"], seven["weight_bits"]) == (8, 7) and "tries" not in seven
    assert max(_convolution_weight_maxima(tmp_path / "seven.xml")["Convolution"]) <= 64
    assert max(_convolution_weight_maxima(tmp_path / "eight.xml")["Convolution"]) > 64


def test_int8_ir_can_start_at_a_later_step_and_refuses_steps_off_the_ladder(exported, image_paths, tmp_path):
    from bpm.export.openvino import quantize_ir

    out, result = exported
    source = Path(result["files"]["onnx"])
    spec = OnnxModel(source).spec
    third = quantize_ir(source, tmp_path / "third.xml", spec, image_paths[:8], weight_bits=7, depthwise_fp32=True)
    assert (third["weight_bits"], third["depthwise_fp32"], third["accuracy_control"]) == (7, True, False)
    maxima = _convolution_weight_maxima(tmp_path / "third.xml")
    assert "GroupConvolution" not in maxima and max(maxima["Convolution"]) <= 64
    quantize_ir(source, tmp_path / "first.xml", spec, image_paths[:8])
    assert "GroupConvolution" in _convolution_weight_maxima(tmp_path / "first.xml")  # the network has depthwise layers
    with pytest.raises(ValueError, match="8-bit [+] depthwise FP32: not a step of the INT8 IR ladder"):
        quantize_ir(source, tmp_path / "off.xml", spec, image_paths[:8], depthwise_fp32=True)


@pytest.mark.slow  # NNCF's accuracy control ranks each layer: minutes on 2 cores
def test_int8_ir_accuracy_control_keeps_in_fp32_the_layers_it_reports(exported, image_paths, tmp_path):
    """NNCF's fallback, asked for near-exact agreement on the calibration images, reverts layers to FP32:
    the report names them, the IR has exactly those unquantised, and agreement does not fall."""
    from bpm.export.openvino import _held_out_agreement, quantize_ir

    out, result = exported
    source = Path(result["files"]["onnx"])
    spec = OnnxModel(source).spec
    calibration = image_paths[:8]
    plain = quantize_ir(source, tmp_path / "plain.xml", spec, calibration, weight_bits=7)
    controlled = quantize_ir(source, tmp_path / "controlled.xml", spec, calibration, weight_bits=7,
                             accuracy_control=True, min_cosine=0.99999, max_fp32_layers=3)
    assert controlled["accuracy_control"] and controlled["fp32_layers"]
    ops = openvino.Core().read_model(str(tmp_path / "controlled.xml")).get_ops()
    layers = {op.get_friendly_name() for op in ops if op.get_type_name() in ("Convolution", "GroupConvolution")}
    quantised = sum(len(v) for v in _convolution_weight_maxima(tmp_path / "controlled.xml").values())
    assert set(controlled["fp32_layers"]) <= set(layers) and quantised + len(controlled["fp32_layers"]) == len(layers)
    assert "fp32_layers" not in plain
    agreement = _held_out_agreement(source, calibration, 0)
    assert agreement(tmp_path / "controlled.xml")["held_out_cosine"] >= agreement(tmp_path / "plain.xml")[
        "held_out_cosine"] - 1e-4


def test_int8_ir_stops_climbing_once_held_out_images_agree(exported, image_paths, tmp_path):
    from bpm.export.openvino import quantize_ir

    out, result = exported
    source = Path(result["files"]["onnx"])
    spec = OnnxModel(source).spec
    agreed = quantize_ir(source, tmp_path / "agreed.xml", spec, image_paths[:8], held_out=image_paths[8:16],
                         min_cosine=1e-6)
    assert [(t["weight_bits"], t["depthwise_fp32"], t["accuracy_control"]) for t in agreed["tries"]] == [
        (8, False, False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agreed.bin", "agreed.xml"]


@pytest.mark.slow  # every step, NNCF's accuracy control last (it ranks each layer: minutes on 2 cores)
def test_int8_ir_climbs_every_step_while_held_out_images_disagree_and_keeps_the_best(exported, image_paths, tmp_path):
    from bpm.export.openvino import quantize_ir

    out, result = exported
    source = Path(result["files"]["onnx"])
    spec = OnnxModel(source).spec
    calibration, held_out = image_paths[:8], image_paths[8:16]
    never = quantize_ir(source, tmp_path / "never.xml", spec, calibration, held_out=held_out, min_cosine=1.5,
                        max_fp32_layers=2)
    steps = [(t["weight_bits"], t["depthwise_fp32"], t["accuracy_control"]) for t in never["tries"]]
    assert steps == [(8, False, False), (7, False, False), (7, True, False), (7, False, True)]
    best = max(never["tries"], key=lambda t: t["held_out_cosine"])
    assert (never["weight_bits"], never["depthwise_fp32"]) == (best["weight_bits"], best["depthwise_fp32"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never.bin", "never.xml"]
    # the file kept is the one chosen: its held-out agreement is the one recorded
    from bpm.export.openvino import _held_out_agreement
    assert _held_out_agreement(source, held_out, 0)(tmp_path / "never.xml")["held_out_cosine"] == pytest.approx(
        best["held_out_cosine"], abs=1e-6)
    if never["depthwise_fp32"]:
        assert "GroupConvolution" not in _convolution_weight_maxima(tmp_path / "never.xml")
    assert ("fp32_layers" in never) == never["accuracy_control"]

def test_an_ir_pinned_to_fp32_computes_in_fp32_on_every_cpu(exported, tmp_path):
    from bpm.export.openvino import write_ir
    from bpm.models.openvino_graph import PRECISION_KEY

    out, result = exported
    source = result["files"]["onnx"]
    spec = OnnxModel(source).spec
    pinned = write_ir(source, tmp_path / "pinned.xml", spec, inference_precision="fp32")
    runner = OpenVinoModel(pinned)
    assert runner.metadata[PRECISION_KEY] == "fp32" and runner.inference_precision == runner.precision == "fp32"
    assert OpenVinoModel(pinned, inference_precision="bf16").metadata[PRECISION_KEY] == "fp32"  # an explicit choice wins


def test_under_a_onednn_cap_without_bf16_an_ir_runs_fp32_unless_pinned_otherwise(exported, monkeypatch):
    out, result = exported
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    runner = OpenVinoModel(result["files"]["openvino"])
    assert runner._config["INFERENCE_PRECISION_HINT"] == "f32" and runner.inference_precision == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert "INFERENCE_PRECISION_HINT" not in OpenVinoModel(result["files"]["openvino"])._config


CAPPED_RUN = """
import json, sys
import numpy as np
from bpm.data.transforms import image_batch
from bpm.models.openvino_graph import OpenVinoModel
runner = OpenVinoModel(sys.argv[1], threads=1)
ops = runner.compiled.get_runtime_model().get_ordered_ops()
kernels = sorted({op.get_rt_info()["primitiveType"].astype(str) for op in ops if op.get_rt_info()["layerType"].astype(str) == "Convolution"})
features = runner(image_batch(sys.argv[2:], runner.spec.input_spec))
print(json.dumps({"kernels": kernels, "precision": runner.inference_precision, "features": features.tolist()}))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 instruction-set cap")
def test_an_ir_runs_on_avx2_kernels_under_the_cap_and_computes_what_onnx_runtime_does(exported, image_paths):
    """The cap is read when OpenVINO first loads, hence a fresh process. It reaches the convolutions
    (oneDNN's), where the time goes; a few of OpenVINO's own kernels (the global pooling) keep the
    CPU's widest instructions. On a CPU with bf16 the IR failed at its first inference under the cap
    before the runner chose FP32 for it."""
    out, result = exported
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([sys.executable, "-c", CAPPED_RUN, str(result["files"]["openvino"]), *image_paths[:4]],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["precision"] == "fp32"
    assert run["kernels"] and all("avx2" in kernel for kernel in run["kernels"]), run["kernels"]
    onnx = OnnxModel(result["files"]["onnx"])
    exact = onnx(image_batch(image_paths[:4], onnx.spec.input_spec))
    assert cosine_rows(np.asarray(run["features"], dtype=np.float32), exact).min() > 0.9999


def test_an_ir_that_fails_at_bf16_is_pinned_to_fp32_and_checked_again(tmp_path, original_ckpt, world, monkeypatch):
    """As on an AMD EPYC with AVX-512 BF16: OpenVINO ran the FP32 IR in bf16 by default, cosine 0.988 < 0.995."""
    from bpm.export.formats import openvino as ir_format
    from bpm.models.openvino_graph import PRECISION_KEY

    class DefaultsToBf16(OpenVinoModel):  # this CPU's default, whatever the test machine's is
        def __init__(self, path, threads=0, inference_precision=None):
            super().__init__(path, threads, inference_precision)
            if self.metadata.get(PRECISION_KEY) != "fp32":
                self.inference_precision = self.precision = "bf16"

    monkeypatch.setattr(ir_format, "OpenVinoModel", DefaultsToBf16)
    monkeypatch.setitem(verify.COSINE_THRESHOLDS, "bf16", 1.5)  # bf16 cannot pass
    logged = []
    result = run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path),
                                      model=ModelSettings(resize_h_w=SIZE), formats=("openvino",),
                                      calib_images=str(world / "bounding_box_train"), calib_count=8, verify_count=8,
                                      threads=2), log=logged.append)
    report = json.loads((tmp_path / "export_report.json").read_text())
    (row,) = report["formats"]
    assert row["status"] == "verified" and row["precision"] == "fp32" == report["openvino"]["inference_precision"]
    assert OpenVinoModel(result["files"]["openvino"]).metadata[PRECISION_KEY] == "fp32"
    assert any("bf16 failed the check" in line and "pinning the IR to fp32" in line for line in logged)


def _first_checks_fail(count: int, checked: list):
    """``pipeline.check_cosine`` with the first ``count`` checks failing, as a real file's lost mAP would."""
    from bpm.export import pipeline

    check_cosine = pipeline.check_cosine

    def check(name, *args):
        result = check_cosine(name, *args)
        checked.append(name)
        if len(checked) <= count:
            result.failures.append(f"a failure of NNCF file {len(checked)}")
        return result
    return check


def _nncf_export(tmp_path, original_ckpt, world, patch, ladder_steps: int, **options):
    """``openvino_int8`` alone, each NNCF climb stopping at its first step (held-out agreement is lifted:
    an untrained net's agreement at 8 bits is not the code's) on a ladder cut to ``ladder_steps``
    (its last step, NNCF's accuracy control, takes minutes)."""
    from bpm.export import int8, openvino as ov_export
    from bpm.export.formats import openvino as ov_format

    patch.setitem(verify.COSINE_THRESHOLDS, "int8", -1.0)
    patch.setattr(int8, "AUTO_QAT_EPOCHS", 1)
    patch.setattr(ov_format, "HELD_OUT_COSINE", 1e-6)
    patch.setattr(ov_format, "MAX_DISTANCE_ERROR", float("inf"))
    patch.setattr(ov_export, "OVERFLOW_LADDER", ov_export.OVERFLOW_LADDER[:ladder_steps])
    patch.setattr(ov_format, "OVERFLOW_LADDER", ov_export.OVERFLOW_LADDER[:ladder_steps])
    return ExportOptions(
        weights=str(original_ckpt), out_dir=str(tmp_path), model=ModelSettings(resize_h_w=SIZE),
        formats=("openvino_int8",), calib_images=str(world / "bounding_box_train"), calib_count=8,
        verify_count=8, threads=2, **options)


def test_an_nncf_ir_that_fails_its_check_climbs_to_the_next_step_of_the_ladder(tmp_path, original_ckpt, world):
    """A ladder step can agree with FP32 on held-out images and still lose too much mAP (a real
    EfficientNet-Lite0 at 7 bits on an AVX2-only CPU); the export then goes on up the ladder, keeping
    every try and every refusal in the report, before it would fine-tune."""
    from bpm.export import pipeline

    checked, logged = [], []
    with pytest.MonkeyPatch.context() as patch:
        options = _nncf_export(tmp_path, original_ckpt, world, patch, ladder_steps=3, qat_epochs=0)
        patch.setattr(pipeline, "check_cosine", _first_checks_fail(1, checked))
        result = run_export(options, log=logged.append)
    assert checked == ["openvino_int8", "openvino_int8"]
    report = json.loads((tmp_path / "export_report.json").read_text())
    notes = report["openvino"]["int8"]
    assert [(t["weight_bits"], t["depthwise_fp32"]) for t in notes["tries"]] == [(8, False), (7, False)]
    assert (notes["weight_bits"], notes["depthwise_fp32"]) == (7, False) and "fine_tuning" not in notes
    assert notes["refused_steps"] == [{"step": "8-bit", "check_failures": ["a failure of NNCF file 1"]}]
    assert all(row["status"] == "verified" for row in report["formats"])
    assert max(_convolution_weight_maxima(result["files"]["openvino_int8"])["Convolution"]) <= 64  # the 7-bit file
    assert any("NNCF's 8-bit file failed the check (a failure of NNCF file 1); climbing the ladder from 7-bit"
               in line for line in logged)
    assert not list(tmp_path.glob("*.refused.*")) and not list(tmp_path.glob(".*try*"))


@pytest.mark.parametrize("may_tune", [pytest.param(True, marks=pytest.mark.slow), False])
def test_an_nncf_ir_that_fails_its_check_on_every_step_is_fine_tuned_next(tmp_path, original_ckpt, world, may_tune):
    """With no fine-tuned graph in the export (``onnx_int8`` passed post-training or was not asked for),
    NNCF files failing their check up to the ladder's last step are followed by the default export's
    fine-tuning and the IR read from that graph: a user asking for ``openvino_int8`` gets a verified
    file without knowing the switches. ``--qat_epochs 0`` rules that route out, and the export fails
    with the last NNCF file kept aside."""
    from bpm.export import pipeline
    from bpm.export.openvino import _fp32_layers

    checked, logged = [], []
    with pytest.MonkeyPatch.context() as patch:
        options = _nncf_export(tmp_path, original_ckpt, world, patch, ladder_steps=2,
                               qat_epochs=None if may_tune else 0)
        patch.setattr(pipeline, "check_cosine", _first_checks_fail(2, checked))
        if not may_tune:
            with pytest.raises(BpmError, match="export check failed for openvino_int8: a failure of NNCF file 2"):
                run_export(options, log=logged.append)
            assert checked == ["openvino_int8"] * 2 and list(tmp_path.glob("*_int8.refused.xml"))
            return
        result = run_export(options, log=logged.append)
    assert checked == ["openvino_int8"] * 3
    report = json.loads((tmp_path / "export_report.json").read_text())
    notes = report["openvino"]["int8"]
    assert notes["method"] == "a QDQ graph fine-tuned for this IR after NNCF's ladder failed its check"
    assert notes["nncf_check_failures"] == ["a failure of NNCF file 2"] and "fine_tuning" in notes
    assert all(row["status"] == "verified" for row in report["formats"])
    ir = openvino.Core().read_model(str(result["files"]["openvino_int8"]))
    assert _fp32_layers(ir) == [] and any(op.get_type_name() == "FakeQuantize" for op in ir.get_ops())
    # the log names the refused file, NNCF's IR, not the (never written) ORT post-training file
    assert any(line.strip().startswith("openvino_int8: NNCF's file failed") and "fine-tuning 1 epochs" in line
               for line in logged)


@pytest.mark.parametrize("qdq_route_fails", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_int8_ir_reads_the_fine_tuned_graph_and_falls_back_to_nncf(tmp_path, original_ckpt, world, qdq_route_fails):
    """Where ``onnx_int8`` fine-tuned (here: its post-training file failed the check, as on a real
    MobileNet-V2), ``openvino_int8`` is read from that QDQ graph, every convolution INT8; should that IR
    fail its own check, NNCF's ladder is the next route."""
    from bpm.export import int8, pipeline
    from bpm.export.openvino import _fp32_layers

    checked = []
    check_cosine = pipeline.check_cosine

    def first_check_of_each_fails(name, *args):
        check = check_cosine(name, *args)
        checked.append(name)
        if checked.count(name) == 1 and (name == "onnx_int8" or qdq_route_fails):
            check.failures.append(f"a failure of the first {name} file")
        return check

    logged = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(verify.COSINE_THRESHOLDS, "int8", -1.0)  # mechanics: an untrained net's INT8 accuracy is not the code's
        patch.setattr(int8, "HELD_OUT_COSINE", 1e-6)
        patch.setattr(int8, "passes_held_out", lambda notes, cosine: True)
        patch.setattr(int8, "AUTO_QAT_EPOCHS", 1)
        patch.setattr(pipeline, "check_cosine", first_check_of_each_fails)
        result = run_export(ExportOptions(
            weights=str(original_ckpt), out_dir=str(tmp_path), model=ModelSettings(resize_h_w=SIZE),
            formats=("onnx_int8", "openvino_int8"), calib_images=str(world / "bounding_box_train"), calib_count=8,
            verify_count=8, threads=2), log=logged.append)
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["int8"]["int8_path"] == "fine-tuned"
    assert all(row["status"] == "verified" for row in report["formats"])
    method = report["openvino"]["int8"]["method"]
    ir = openvino.Core().read_model(str(result["files"]["openvino_int8"]))
    runs_at = OpenVinoModel(result["files"]["openvino_int8"]).inference_precision
    assert report["openvino"] == {"int8": {**report["openvino"]["int8"], "inference_precision": runs_at}}
    if qdq_route_fails:
        assert checked == ["onnx_int8", "onnx_int8", "openvino_int8", "openvino_int8"]
        assert method.startswith("NNCF") and any("quantising with NNCF instead" in line for line in logged)
    else:
        assert checked == ["onnx_int8", "onnx_int8", "openvino_int8"]
        assert method == "the fine-tuned QDQ graph of onnx_int8" and _fp32_layers(ir) == []
        assert any(op.get_type_name() == "FakeQuantize" for op in ir.get_ops())
