"""Teachers from ONNX files with their own input size, colour order, scaling and embedding size;
one-line errors for everything that can be wrong with a teacher file."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bpm.distill.input_spec import IMAGENET_MEAN, IMAGENET_STD, parse_teacher_input
from bpm.distill.teacher import file_sha256, open_teacher
from bpm.errors import BpmError
from teacher_helpers import TinyTeacher, export_teacher


def _image(seed: int = 0, size=(40, 90)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _by_hand(module, image: Image.Image, h: int, w: int, bgr: bool, scale: str) -> np.ndarray:
    x = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    if scale == "imagenet":
        x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    elif scale == "tf":
        x = x * 2 - 1
    if bgr:
        x = x[:, :, ::-1]
    batch = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        return module(batch).numpy()


@pytest.mark.parametrize("channels,scale", [("rgb", "imagenet"), ("bgr", "tf"), ("bgr", "unit")])
def test_onnx_teacher_applies_its_own_size_colour_order_and_scaling(tiny_teacher_onnx, channels, scale):
    path, module = tiny_teacher_onnx
    teacher = open_teacher(path, f"48x24,{channels},{scale}")
    assert teacher.dim == 7 and teacher.sha256 == file_sha256([path])
    images = [_image(0), _image(1)]
    got = teacher.embed_images(images)
    want = np.concatenate([_by_hand(module, im, 48, 24, channels == "bgr", scale) for im in images])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_colour_order_matters(tiny_teacher_onnx):
    path, _module = tiny_teacher_onnx
    image = [_image(2)]
    rgb = open_teacher(path, "48x24,rgb,imagenet").embed_images(image)
    bgr = open_teacher(path, "48x24,bgr,imagenet").embed_images(image)
    assert not np.allclose(rgb, bgr, atol=1e-4)


def test_a_tensor_batch_at_the_teachers_size_gives_the_same_embedding(tiny_teacher_onnx):
    path, _module = tiny_teacher_onnx
    teacher = open_teacher(path, "48x24")
    image = _image(3, size=(24, 48))  # already the teacher's size: no resize on either path
    unit = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)[None]
    np.testing.assert_allclose(teacher.embed_unit(unit), teacher.embed_images([image]), rtol=1e-4, atol=1e-5)
    assert teacher.embed_unit(torch.rand(3, 3, 64, 32)).shape == (3, 7)  # another size is resized


def test_a_fixed_batch_of_one_graph_is_run_image_by_image(tmp_path):
    module = TinyTeacher(5)
    path = export_teacher(module, tmp_path / "fixed.onnx", (32, 16), batch_axis=False)
    teacher = open_teacher(path, "32x16,rgb,unit")
    assert teacher.embed_images([_image(i) for i in range(3)]).shape == (3, 5)


@pytest.mark.parametrize("text", ["256", "256x128,rgb,imagenet,more", "256x128,yuv", "0x128", "256x128,rgb,bgr",
                                  "axb,rgb"])
def test_bad_input_specs_are_one_line(text):
    with pytest.raises(BpmError, match=r"^--teacher_input: ") as error:
        parse_teacher_input(text)
    assert "\n" not in str(error.value)


def test_input_spec_defaults_and_canonical_text():
    assert parse_teacher_input("256x128").text == "256x128,rgb,imagenet"
    assert parse_teacher_input(" 64x32 , TF , BGR ").text == "64x32,bgr,tf"


def test_teacher_file_errors_are_one_line(tiny_teacher_onnx, tmp_path, monkeypatch):
    path, _module = tiny_teacher_onnx
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a graph")
    not_weights = tmp_path / "teacher.pth"
    not_weights.write_bytes(b"not weights either")
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed, whatever this machine has
    cases = [
        (lambda: open_teacher(tmp_path / "missing.onnx", "48x24"), "not found"),
        (lambda: open_teacher(garbage, "48x24"), "ONNX Runtime cannot load"),
        (lambda: open_teacher(path), "does not say how it wants its pixels.*48x24"),
        (lambda: open_teacher(path, "64x32,rgb,imagenet"), "takes 48x24 images"),
        (lambda: open_teacher(not_weights), "^--teacher: "),
        (lambda: open_teacher(path.parent / "tiny.onnx", "48x24,rgb,nonsense"), "^--teacher_input"),
        (lambda: open_teacher(xml, "48x24"), "openvino package, which is not installed"),
    ]
    for call, pattern in cases:
        with pytest.raises(BpmError, match=pattern) as error:
            call()
        assert "\n" not in str(error.value), pattern
