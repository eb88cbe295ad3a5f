"""A failed ``bpm export`` never replaces a verified export (Reliability III, finding 1).

Each format is written under a temporary name and moved to its final name only after its check
passed; a refused file is kept as ``*.refused.<ext>``, marked as such in its ONNX metadata, and
``FeatureExtractor`` warns when it loads one. The report keeps the rows of the files it did not
rewrite.
"""
from __future__ import annotations

import json

import onnx
import pytest
import torch

import bpm
import bpm.export.verify as verify
from bpm.errors import BpmError
from bpm.settings import ModelSettings
from bpm.export.pipeline import ExportOptions, run_export

from export_helpers import SIZE


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _export(weights, out, formats, calib_folder):
    return run_export(ExportOptions(weights=str(weights), out_dir=str(out),
                                    model=ModelSettings(resize_h_w=SIZE), formats=formats,
                                    calib_images=str(calib_folder), verify_count=4, evaluate=False, threads=2),
                      log=lambda line: None)


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory, mobilenet):
    """Model B: the same network and input size (so the same file names), other weights."""
    path = tmp_path_factory.mktemp("b") / "b.pth"
    generator = torch.Generator().manual_seed(1)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
             for k, v in mobilenet.state_dict().items()}
    torch.save({"state_dicts": [state], "ep": 1}, path)
    return path


def test_a_refused_export_keeps_the_verified_file_and_its_report_row(tmp_path, original_ckpt, other_ckpt, world,
                                                                     monkeypatch):
    calib = world / "bounding_box_train"
    first = _export(original_ckpt, tmp_path, ("onnx",), calib)
    verified = first["files"]["onnx"]
    verified_bytes = verified.read_bytes()
    meta = _metadata(verified)
    assert meta["bpm.verification"] == "verified" and "mean cosine" in meta["bpm.verification_detail"]

    monkeypatch.setitem(verify.COSINE_THRESHOLDS, "fp32", 1.5)  # model B's files cannot pass
    with pytest.raises(BpmError, match="export check failed for pt, onnx") as failure:
        _export(other_ckpt, tmp_path, ("pt", "onnx"), calib)
    assert "refused.onnx" in str(failure.value)
    assert verified.read_bytes() == verified_bytes  # A's verified file untouched
    refused_onnx = verified.with_name(verified.stem + ".refused.onnx")
    assert refused_onnx.is_file() and _metadata(refused_onnx)["bpm.verification"] == "refused"
    assert not (tmp_path / "mobilenet_v2_64x32_fp32.pt").exists()  # no unverified file under a final name
    assert (tmp_path / "mobilenet_v2_64x32_fp32.refused.pt").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging files left

    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["passed"] is False
    rows = {row["file"]: row for row in report["formats"]}
    assert rows["mobilenet_v2_64x32_fp32.refused.onnx"]["status"] == "refused"
    earlier = {row["file"]: row for row in report["earlier_files"]}
    assert earlier[verified.name]["passed"] is True and earlier[verified.name]["source"] == str(original_ckpt)

    with pytest.warns(UserWarning, match="refused by bpm export"):
        bpm.FeatureExtractor(refused_onnx)
    with warnings_as_errors():
        bpm.FeatureExtractor(verified)  # a verified file loads silently


def test_an_unverified_onnx_file_warns(tmp_path, mobilenet):
    from bpm.export.onnx import OnnxSpec, export_onnx
    from bpm.export.verify import stamp_verification

    path = export_onnx(mobilenet, tmp_path / "m.onnx", OnnxSpec("mobilenet_v2", SIZE))
    stamp_verification(path, "unverified", "written, not yet checked")
    with pytest.warns(UserWarning, match="not verified"):
        bpm.FeatureExtractor(path)


class warnings_as_errors:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def test_out_naming_a_file_is_one_line(tmp_path, original_ckpt):
    """Reliability III finding 10: ``--out <file>`` said "File exists"."""
    target = tmp_path / "a_file"
    target.write_text("mine")
    with pytest.raises(BpmError, match=r"^--out .*a_file: is a file; expected a folder"):
        run_export(ExportOptions(weights=str(original_ckpt), out_dir=str(target), model=ModelSettings(resize_h_w=SIZE),
                                 formats=("onnx",)), log=lambda line: None)
    assert target.read_text() == "mine"


def test_a_degenerate_model_is_flagged_by_export(tmp_path, mobilenet, world):
    """Reliability III finding 10: ``bpm export`` of a model whose features do not depend on the image
    said nothing (``bpm test`` warns); its checks then compare ties."""
    state = {k: (torch.zeros_like(v) if k.startswith("base.features.18.0.weight") else v)
             for k, v in mobilenet.state_dict().items()}  # the last convolution: output = BatchNorm's shift
    path = tmp_path / "flat.pth"
    torch.save({"state_dicts": [state], "ep": 1}, path)
    lines: list[str] = []
    result = run_export(ExportOptions(weights=str(path), out_dir=str(tmp_path / "out"),
                                      model=ModelSettings(resize_h_w=SIZE),
                                      formats=("pt",), calib_images=str(world / "bounding_box_train"),
                                      verify_count=4, evaluate=False), log=lines.append)
    assert any(line.startswith("WARNING") and "nearly the same vector for every image" in line for line in lines)
    assert json.loads(result["report"].read_text())["degenerate_reference"] is True
