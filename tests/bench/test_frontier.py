"""bench/frontier.py: graph cost by hand, reference specs, and the whole bench on a tiny synthetic folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bpm.data.synthetic import WorldConfig, generate_world

from bench_helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("frontier")


def _tiny_onnx(path: Path, size=(32, 16), dim=8) -> Path:
    """Conv 3->4 (3x3, stride 2, pad 1) -> ReLU -> global pool -> Linear 4->dim."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, dim)).eval()
    torch.onnx.export(net, torch.zeros(1, 3, *size), str(path), input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "n"}, "out": {0: "n"}}, opset_version=17, dynamo=False)
    return path


def test_onnx_cost_counts_conv_and_linear_by_hand(bench, tmp_path):
    params, macs = bench.onnx_cost(_tiny_onnx(tmp_path / "t.onnx"))
    assert params == (4 * 3 * 3 * 3 + 4) + (8 * 4 + 8)
    # Conv: 16x8 outputs x 4 channels, each 3*3*3 MACs; Linear: 8 outputs x 4 inputs.
    assert macs == 16 * 8 * 4 * 27 + 8 * 4


class _SamePad(nn.Module):
    """TF "SAME" padding computed from the input's size, as EfficientNet-Lite does: the exported graph
    computes the Pad amounts (Shape/Slice/Concat ...), which shape inference alone cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        pad_h, pad_w = max((h + 1) // 2 * 2 - 2 + 3 - h, 0), max((w + 1) // 2 * 2 - 2 + 3 - w, 0)
        x = nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self.conv(x).mean((2, 3))


def test_onnx_cost_follows_padding_computed_in_the_graph(bench, tmp_path):
    torch.onnx.export(_SamePad().eval(), torch.zeros(1, 3, 32, 16), str(tmp_path / "p.onnx"), input_names=["input"],
                      output_names=["out"], dynamic_axes={"input": {0: "n"}, "out": {0: "n"}}, opset_version=17,
                      dynamo=False)
    params, macs = bench.onnx_cost(tmp_path / "p.onnx")
    assert params == 4 * 3 * 3 * 3 + 4
    assert macs == 16 * 8 * 4 * 27  # "SAME" at stride 2: 32x16 -> 16x8 outputs


@pytest.mark.parametrize("text, message", [
    ("osnet", "expected NAME=FILE.onnx@"),
    ("osnet=x.onnx", "expected NAME=FILE.onnx@"),
    ("osnet=x.onnx@256x128,rgb", "must be HxW,rgb|bgr"),
    ("osnet=x.onnx@256x128,yuv,imagenet", "must be HxW,rgb|bgr"),
    ("osnet=x.onnx@256by128,rgb,imagenet", "must be HxW"),
    ("osnet=missing.onnx@256x128,rgb,imagenet", "not found"),
])
def test_bad_reference_specs_are_one_line_errors(bench, text, message):
    with pytest.raises(SystemExit, match=message):
        bench.parse_reference(text)


def test_a_trained_row_reads_mINP_from_the_runs_results(bench, tmp_path):
    ckpt = tmp_path / "run" / "ckpt.pth"
    ckpt.parent.mkdir()
    assert bench.results_beside(ckpt) is None  # no results.json: the row falls back to the ONNX check
    (ckpt.parent / "results.json").write_text(json.dumps({"mAP": 0.42, "mINP": 0.31, "cmc": {"1": 0.43, "5": 0.6}}))
    assert bench.results_beside(ckpt) == {"mAP": 0.42, "rank1": 0.43, "mINP": 0.31, "s_per_epoch": None}
    (ckpt.parent / "results.json").write_text("{not json")
    assert bench.results_beside(ckpt) is None


def test_reference_input_follows_its_spec(bench, tmp_path):
    image = np.zeros((8, 4, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(image).save(tmp_path / "red.png")
    model = _tiny_onnx(tmp_path / "m.onnx")
    rgb = bench.parse_reference(f"m={model}@8x4,rgb,tf")
    bgr = bench.parse_reference(f"m={model}@8x4,bgr,unit")
    x = bench.reference_input([str(tmp_path / "red.png")], rgb)
    assert x.shape == (1, 3, 8, 4)
    np.testing.assert_allclose(x[0, :, 0, 0], [(255 - 127) / 128, -127 / 128, -127 / 128], rtol=1e-5)
    np.testing.assert_allclose(bench.reference_input([str(tmp_path / "red.png")], bgr)[0, :, 0, 0], [0, 0, 1])


def _folder_layout(tmp_path: Path) -> Path:
    world = generate_world(tmp_path / "world", WorldConfig(
        num_train_ids=8, num_test_ids=6, num_distractors=0, num_junk=0, image_height=64, image_width=32, seed=5))
    data = tmp_path / "data"
    shutil.copytree(world / "bounding_box_train", data / "train")
    shutil.copytree(world / "query", data / "query")
    shutil.copytree(world / "bounding_box_test", data / "gallery")
    return data


@pytest.mark.slow
@pytest.mark.openvino  # with OpenVINO installed the row adds openvino_int8, timed in this process (see the Makefile)
def test_trains_exports_times_and_plots_each_row(bench, tmp_path, capsys):
    data = _folder_layout(tmp_path)
    reference = _tiny_onnx(tmp_path / "ref.onnx", size=(64, 32))
    out = tmp_path / "rows.json"
    assert bench.main([
        "--data_root", str(data), "--resize_h_w", "64,32", "--epochs", "1", "--workers", "0", "--qat_epochs", "1",
        "--repeats", "1", "--out", str(tmp_path / "runs"),
        "--backbone", "mnv2=--net mobilenetV2 --net_pretrained_path none --ids_per_batch 4 --ims_per_id 2",
        "--reference", f"tiny={reference}@64x32,rgb,imagenet",
        "--json", str(out), "--plot", str(tmp_path / "frontier.png")]) == 0
    printed = capsys.readouterr().out
    assert "| mnv2 | 64x32 |" in printed and "| tiny | 64x32 |" in printed and "cpu" in printed.lower()
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    mnv2, tiny = rows["mnv2"], rows["tiny"]
    assert 0 < mnv2["accuracy"]["mAP"] <= 1 and mnv2["s_per_epoch"] > 0
    assert mnv2["int8"]["precision"] == "int8" and mnv2["int8_qat"]["precision"] == "int8"
    assert mnv2["int8_route"].startswith(("post-training", "fine-tuned"))
    openvino = {"ov_int8"} if bench.HAVE_OPENVINO else set()
    assert set(mnv2["speed"]) == {"fp32", "int8", "fp32_256x128", "int8_256x128"} | openvino
    if openvino:  # checked by the export like every format, and a column of the table
        assert mnv2["ov_int8"]["precision"] == "int8" and "OpenVINO INT8 img/s" in printed
    for timing in mnv2["speed"].values():
        assert timing["images_per_s_b32"] > 0 and timing["latency_ms_b1"] > 0
    assert 2e6 < mnv2["params"] < 3e6 and mnv2["macs"] > 0
    assert 0 < tiny["accuracy"]["mAP"] <= 1 and tiny["params"] == (4 * 27 + 4) + (8 * 4 + 8)
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_a_row_is_plotted_at_its_fastest_verified_format(bench):
    speed = {"fp32": {"images_per_s_b32": 100.0}, "int8": {"images_per_s_b32": 300.0},
             "ov_int8": {"images_per_s_b32": 250.0}}
    row = {"accuracy": {"mAP": 0.40}, "speed": speed, "int8": {"mAP": 0.39, "passed": True},
           "ov_int8": {"mAP": 0.395, "passed": True}}
    assert bench.fastest_verified(row) == ("INT8", 300.0, 0.39)
    row["int8"]["passed"] = False  # a refused file is not a place to deploy from, however fast
    assert bench.fastest_verified(row) == ("OpenVINO INT8", 250.0, 0.395)
    del row["ov_int8"]  # no OpenVINO: the FP32 file
    assert bench.fastest_verified(row) == ("FP32", 100.0, 0.40)
    assert bench.fastest_verified({"accuracy": {}, "speed": {}}) is None


def test_int8_route_names_what_the_default_export_kept(bench):
    assert bench.int8_route({"int8": {"int8_path": "post-training", "fp32_layers": ["conv0", "conv1"]}}) \
        == "post-training, 2 FP32"
    assert bench.int8_route({"int8": {"int8_path": "fine-tuned", "fp32_layers": []}}) == "fine-tuned"
    assert bench.int8_route({"int8": None}) == "" and bench.int8_route({}) == ""
