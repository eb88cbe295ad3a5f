"""Export formats are registry entries: a new one is a file of its own (here: this test file only)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bpm.cli import main
from bpm.errors import BpmError
from bpm.export.formats import EXPORT_FORMATS, ExportContext, Opened, default_formats, export_format
from bpm.export.pipeline import ExportOptions, parse_formats, reference_features, run_export
from bpm.models.loading import load_model

from export_helpers import SIZE


def _open_npz(ctx: ExportContext, path: Path) -> Opened:
    model, _spec = load_model(ctx.model.net, resize_h_w=ctx.opts.input_spec.resize_h_w)
    with np.load(path) as arrays:
        model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files}, strict=False)
    return Opened("fp32", lambda paths: reference_features(model.eval(), paths, ctx.opts))


@pytest.fixture
def toy_format():
    """A NumPy ``.npz`` weights format, registered for one test and forgotten after it."""
    @export_format("toy_npz", "{stem}_toy.npz", opens=_open_npz, default=False, retrieval=False,
                   help="NumPy arrays of the state_dict (toy format of this test)")
    def write_npz(ctx: ExportContext, path: Path) -> None:
        with open(path, "wb") as handle:  # np.savez would append .npz to the staged name's own suffix
            np.savez(handle, **{k: v.numpy() for k, v in ctx.model.state_dict().items()})

    yield "toy_npz"
    EXPORT_FORMATS.remove("toy_npz")


def test_a_format_registered_in_a_test_file_is_exported_and_verified(tmp_path, original_ckpt, world, toy_format):
    assert parse_formats("onnx,toy_npz") == ("onnx", "toy_npz")
    assert toy_format not in default_formats()
    code = main(["export", "--weights", str(original_ckpt), "--out", str(tmp_path), "--formats", toy_format,
                 "--resize_h_w", f"{SIZE[0]},{SIZE[1]}", "--calib_images", str(world / "bounding_box_train"),
                 "--verify_count", "4"])
    assert code in (0, None)
    report = json.loads((tmp_path / "export_report.json").read_text())
    (row,) = report["formats"]
    assert row["format"] == toy_format and row["status"] == "verified" and row["cosine_mean"] > 0.9999
    assert row["file"] == "mobilenet_v2_64x32_toy.npz" and (tmp_path / row["file"]).is_file()
    assert not list(tmp_path.glob(".*"))  # nothing staged left behind


def test_registration_is_undone_and_names_are_checked(toy_format):
    with pytest.raises(BpmError, match="already registered"):
        export_format("onnx", "{stem}.x", opens=_open_npz)(lambda ctx, path: None)
    EXPORT_FORMATS.remove(toy_format)
    with pytest.raises(BpmError, match="--formats: unknown format"):
        parse_formats(toy_format)
    with pytest.raises(BpmError, match="--formats: unknown export format 'toy_npz'"):
        run_export(ExportOptions(weights="unused.pth", out_dir="unused", formats=(toy_format,)))
    export_format(toy_format, "{stem}.npz", opens=_open_npz)(lambda ctx, path: None)  # for the fixture


def test_every_registered_format_declares_a_distinct_file_name():
    patterns = [EXPORT_FORMATS.get(n).file_name for n in EXPORT_FORMATS.names()]
    assert len(set(patterns)) == len(patterns)
    assert all(EXPORT_FORMATS.get(n).help for n in EXPORT_FORMATS.names())


def test_a_format_with_a_companion_file_counts_both_and_the_table_keeps_its_columns(tmp_path, original_ckpt, world,
                                                                                   toy_format):
    """As an OpenVINO IR's .xml and .bin: the size reported is the pair's, and a long format name
    (``openvino_int8``) does not run into the file name in the log's table."""
    @export_format("toy_npz_with_side_file", "{stem}_toy_side.npz", opens=_open_npz, default=False, retrieval=False,
                   companions=(".side",), help="the toy format and a side file")
    def write_pair(ctx: ExportContext, path: Path) -> None:
        EXPORT_FORMATS.get(toy_format).write(ctx, path)
        path.with_suffix(".side").write_bytes(b"x" * 100_000)

    try:
        logged = []
        run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(tmp_path), formats=("toy_npz_with_side_file",),
                                 calib_images=str(world / "bounding_box_train"), verify_count=4), log=logged.append)
    finally:
        EXPORT_FORMATS.remove("toy_npz_with_side_file")
    report = json.loads((tmp_path / "export_report.json").read_text())
    (row,) = report["formats"]
    files = [tmp_path / row["file"], (tmp_path / row["file"]).with_suffix(".side")]
    assert row["status"] == "verified" and row["bytes"] == sum(f.stat().st_size for f in files)
    line = next(line for line in report["table"] if line.startswith("toy_npz_with_side_file"))
    assert line.split()[:3] == ["toy_npz_with_side_file", row["file"], f"{row['bytes'] / 1e6:.2f}"]
