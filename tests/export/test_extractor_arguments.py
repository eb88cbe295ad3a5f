"""FeatureExtractor's arguments are checked as the command line checks them (Reliability III, finding 7):
one-line errors with the CLI's wording instead of tracebacks, and nothing silently ignored."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bpm
from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, export_onnx

from export_helpers import SIZE


@pytest.mark.parametrize("size", [(0, 0), (64,), (64, 32, 3), (5000, 64)])
def test_a_bad_input_size_is_the_clis_one_line_error(original_ckpt, size):
    with pytest.raises(BpmError, match=r"^--resize_h_w: expected '\(height, width\)' with each side from 1 to 4096"):
        bpm.FeatureExtractor(original_ckpt, resize_h_w=size)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_the_clis_one_line_error(original_ckpt):
    with pytest.raises(BpmError, match="CUDA is not available on this machine"):
        bpm.FeatureExtractor(original_ckpt, device="cuda")


def test_an_empty_image_is_refused_not_embedded_as_black(original_ckpt):
    extractor = bpm.FeatureExtractor(original_ckpt, resize_h_w=SIZE)
    with pytest.raises(BpmError, match=r"image array: expected at least 1x1 pixels, got shape \(0, 0, 3\)"):
        extractor(np.zeros((0, 0, 3), np.uint8))


def test_resize_h_w_for_an_onnx_file_must_match_its_built_in_size(tmp_path, mobilenet):
    path = export_onnx(mobilenet, tmp_path / "m.onnx", OnnxSpec("mobilenet_v2", SIZE))
    assert bpm.FeatureExtractor(path, resize_h_w=SIZE).resize_h_w == SIZE  # the same size: fine
    with pytest.raises(BpmError, match=r"m.onnx: the graph takes 64x32 input \(built in at export\); "
                                       r"--resize_h_w \(128, 64\) cannot change it"):
        bpm.FeatureExtractor(path, resize_h_w=(128, 64))
