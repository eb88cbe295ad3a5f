"""bench/infer_speed.py end to end on a tiny input: every runtime row, both sizes, a reference model alongside."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench_helpers import load_bench


@pytest.mark.slow
@pytest.mark.openvino  # loads OpenVINO when installed: its own process (see the Makefile)
def test_every_runtime_size_and_batch_is_timed_against_ort_fp32_of_the_same_run(tmp_path, capsys):
    bench = load_bench("infer_speed")
    reference = tmp_path / "other.onnx"
    torch.onnx.export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(),
                      torch.zeros(1, 3, 24, 12), str(reference), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    from onnxruntime.quantization import quantize_dynamic
    quantized = tmp_path / "other_int8.onnx"
    quantize_dynamic(str(reference), str(quantized))
    out = tmp_path / "rows.json"
    assert bench.main(["--quick", "--sizes", "32x16,64x32", "--batches", "1,2", "--repeats", "1", "--calib", "4",
                       "--reference", f"{reference}@24x12", "--reference", f"{quantized}@24x12",
                       "--dynamic", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert {(r["size"], r["batch"]) for r in rows if r["net"] == "mobilenetV2"} == {
        (s, b) for s in ("32x16", "64x32") for b in (1, 2)}
    backends = {r["backend"] for r in rows if r["net"] == "mobilenetV2"}
    assert {"ort_fp32", "ort_int8", "torch_fp32"} <= backends
    saturates = bench.this_cpu_saturates()
    assert ("ort_int8_w7" in backends) == ("ort_int8_saturating" in backends) == saturates
    if bench.HAVE_OPENVINO:
        assert "ov_int8" in backends and any(b.startswith("ov_") and b.endswith("(default)") for b in backends)
        assert ({"ov_int8_w7", "ov_int8_w7_dw_fp32"} <= backends) == saturates  # every ladder step where it saturates
        assert {"ov_int8_2streams", "ort_fp32_2sessions"} <= backends  # --streams 2, the default
        # --dynamic: every OpenVINO INT8 file once more, compiled for any batch size
        assert "ov_int8_dynamic" in backends and ("ov_int8_w7_dynamic" in backends) == saturates
    else:
        assert "OpenVINO rows left out" in printed
    assert all(r["vs_ort_fp32"] == 1.0 for r in rows if r["backend"] == "ort_fp32")
    # both files of the reference model in one round-robin group, named by precision, against its FP32 file
    references = {r["backend"]: r for r in rows if r["net"] == "ref:other+other_int8" and r["batch"] == 2}
    assert references["ort_fp32:other"]["vs_ort_fp32"] == 1.0 and references["ort_fp32:other"]["size"] == "24x12"
    assert references["ort_int8:other_int8"]["vs_ort_fp32"] > 0
    if bench.HAVE_OPENVINO:  # OpenVINO's rows of an ONNX file name its suffix: an IR of the same stem stays apart
        assert {"ov_int8:other_int8.onnx", "ov_int8_2streams:other_int8.onnx", "ov_int8_dynamic:other_int8.onnx"} \
            <= set(references)
    assert references["ort_fp32_2sessions:other"]["vs_ort_fp32"] > 0
    assert "load average" in printed


@pytest.mark.openvino  # loading the bench loads OpenVINO when installed
@pytest.mark.parametrize("saturates, best, verdict", [(True, "ov_int8_w7_dw_fp32 1.90x", "met"),
                                                      (False, "ov_int8 2.50x", "missed")])
def test_best_format_counts_only_rows_that_compute_exactly_on_this_cpu(saturates, best, verdict, capsys):
    bench = load_bench("infer_speed")
    rows = [{"net": "m", "size": "256x128", "batch": 32, "backend": name, "vs_ort_fp32": ratio}
            for name, ratio in [("ort_fp32", 1.0), ("ort_int8", 1.3), ("ort_int8_saturating", 2.9),
                                ("ov_int8", 2.5), ("ov_int8_dynamic", 2.4), ("ov_int8_w7", 2.2),
                                ("ov_int8_w7_dw_fp32", 1.9)]
            if saturates or name != "ort_int8_saturating"]  # that row exists only where 8 bits saturate
    rows += [{"net": "m", "size": "128x64", "batch": 32, "backend": "ort_int8_w7", "vs_ort_fp32": 9.0},
             {"net": "m", "size": "256x128", "batch": 1, "backend": "ort_int8_w7", "vs_ort_fp32": 9.0}]
    rows += [{**row, "net": "ref:a+b"} for row in rows]  # reference groups may hold several models: no verdict
    bench.print_best_format(rows, saturates)
    line = capsys.readouterr().out.strip()
    target = "1.8x" if saturates else "3.0x"
    assert line.endswith(f": {best} ({verdict})") and f">= {target} ORT FP32" in line


@pytest.mark.openvino  # loading the bench loads OpenVINO when installed
def test_under_a_onednn_cap_without_vnni_only_openvino_rows_are_judged_as_an_avx2_cpu_s(capsys):
    bench = load_bench("infer_speed")
    rows = [{"net": "m", "size": "256x128", "batch": 32, "backend": name, "vs_ort_fp32": ratio}
            for name, ratio in [("ort_fp32", 1.0), ("ort_int8", 2.2), ("ov_int8", 1.6), ("ov_int8_w7", 1.5),
                                ("ov_int8_w7_dw_fp32", 1.3)]]
    bench.print_best_format(rows, saturates=False, ov_saturates=True)  # ORT INT8 still runs VNNI kernels
    line = capsys.readouterr().out.strip()
    assert "(AVX2-only CPU, OpenVINO capped)" in line and line.endswith(": ov_int8_w7_dw_fp32 1.30x (missed)")
    bench.print_best_format(rows, saturates=False)
    assert capsys.readouterr().out.strip().endswith("(VNNI CPU): ort_int8 2.20x (missed)")


@pytest.mark.openvino  # loading the bench loads OpenVINO when installed
def test_a_best_split_row_is_also_compared_with_ort_fp32_split_the_same_way(capsys):
    bench = load_bench("infer_speed")
    rows = [{"net": "m", "size": "256x128", "batch": 32, "backend": name, "vs_ort_fp32": ratio, "images_per_s": ips}
            for name, ratio, ips in [("ort_fp32", 1.0, 100.0), ("ort_fp32_2sessions", 1.2, 120.0),
                                     ("ort_int8", 1.5, 150.0), ("ov_int8", 2.5, 250.0), ("ov_int8_2streams", 3.3, 330.0)]]
    bench.print_best_format(rows, saturates=False)
    assert capsys.readouterr().out.strip().endswith(": ov_int8_2streams 3.30x (met); 2.75x ort_fp32_2sessions")
    bench.print_best_format(rows, saturates=True)  # the 8-bit IR saturates there, split or not
    assert capsys.readouterr().out.strip().endswith(": ort_int8 1.50x (missed)")


@pytest.mark.openvino  # loading the bench loads OpenVINO when installed
def test_versus_compares_the_rows_of_each_round_robin_with_the_reference_timed_in_it(capsys):
    bench = load_bench("infer_speed")
    student = "ref:student_fp32+student_int8"
    rows = [{"net": net, "size": size, "batch": batch, "backend": backend, "images_per_s": ips}
            for net, size, batch, backend, ips in [
                (student, "128x64", 32, "ort_fp32:student_fp32", 1500.0),
                (student, "128x64", 32, "ov_int8:student_int8", 4000.0),
                (student, "256x128", 32, "ort_fp32:teacher", 800.0),  # the teacher, timed in the student's turn
                (student, "128x64", 1, "ov_int8:student_int8", 1000.0),
                (student, "256x128", 1, "ort_fp32:teacher", 400.0),
                ("ref:teacher", "256x128", 32, "ort_fp32:teacher", 700.0),  # its own group: nothing to compare
                ("ref:teacher", "256x128", 32, "ov_fp32(default):teacher.onnx", 1100.0)]]
    ratios = bench.print_versus(rows, "teacher")
    assert ratios == [(f"{student} 128x64 ov_int8:student_int8", 5.0),
                      (f"{student} 128x64 ort_fp32:student_fp32", 1.875),
                      (f"{student} 128x64 ov_int8:student_int8", 2.5)]  # batch 1 against the teacher at batch 1
    printed = capsys.readouterr().out
    assert "against teacher (ORT FP32, 256x128, batch 32: 800.0 img/s), in the round-robin of " + student in printed
    assert bench.print_versus(rows, "nothing") == []
    assert "--versus nothing: no ORT FP32 row" in capsys.readouterr().out


@pytest.mark.openvino  # loading the bench loads OpenVINO when installed
def test_the_versus_file_runs_at_its_own_size_in_every_other_group(tmp_path, capsys):
    bench = load_bench("infer_speed")
    small, large = _pool_net(tmp_path / "student.onnx", (24, 12)), _pool_net(tmp_path / "teacher.onnx", (48, 24))
    out = tmp_path / "rows.json"
    assert bench.main(["--nets", "", "--batches", "2", "--repeats", "1", "--streams", "1", "--versus", "teacher",
                       "--reference", f"{small}@24x12", "--reference", f"{large}@48x24", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    in_student_turn = {r["backend"]: r["size"] for r in rows if r["net"] == "ref:student"}
    assert in_student_turn["ort_fp32:student"] == "24x12" and in_student_turn["ort_fp32:teacher"] == "48x24"
    assert "in the round-robin of ref:student" in capsys.readouterr().out


def _pool_net(path, size):
    torch.onnx.export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(),
                      torch.zeros(1, 3, *size), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return path
