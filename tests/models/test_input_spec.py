"""InputSpec: resolved once, field by field: explicit value > the file's record > the backbone's default."""
from __future__ import annotations

import pytest

from bpm.errors import BpmError
from bpm.models.input_spec import InputSpec, input_spec_of_model, resolve_input_spec
from bpm.models.registry import get_backbone
from bpm.models.reid import ReidModel

MOBILENET = get_backbone("mobilenet_v2")


def test_defaults_come_from_the_backbone_and_the_neck():
    spec = resolve_input_spec(MOBILENET, {}, {}, "f.pth", {"pooling": "gem", "neck": "bnneck"})
    assert spec == InputSpec(net="mobilenet_v2", mean=MOBILENET.mean, std=MOBILENET.std, feature_dim=1280,
                             pooling="gem", neck="bnneck", normalize_features=True)


def test_record_then_explicit_value(capsys):
    record = {"resize_h_w": [64, 32], "mean": [0.5, 0.5, 0.5], "normalize_features": False, "neck": "bnneck",
              "recipe": "bot", "bpm_version": "0.1.0"}
    spec = resolve_input_spec(MOBILENET, record, {"resize_h_w": None, "normalize_features": True}, "f.pth")
    assert spec.resize_h_w == (64, 32) and spec.mean == (0.5, 0.5, 0.5) and spec.std == MOBILENET.std
    assert spec.neck == "bnneck" and spec.normalize_features
    assert capsys.readouterr().err == ("warning: --normalize_feature True differs from the False that f.pth was "
                                       "trained with; using True\n")


def test_a_stride_the_backbone_lacks_is_refused_when_asked_and_ignored_when_recorded():
    assert resolve_input_spec(MOBILENET, {"last_conv_stride": 2}, {}, "old.pth").last_conv_stride == 1
    with pytest.raises(BpmError, match="--last_conv_stride 2: --net mobilenet_v2 takes 1"):
        resolve_input_spec(MOBILENET, {}, {"last_conv_stride": 2}, "f.pth")
    assert resolve_input_spec(get_backbone("resnet50"), {}, {"last_conv_stride": 2}, "f.pth").last_conv_stride == 2


def test_unknown_colour_order_or_interpolation_is_one_line():
    with pytest.raises(BpmError, match="colour order 'YUV'"):
        InputSpec(net="x", color="YUV")
    with pytest.raises(BpmError, match="interpolation 'nearest'"):
        resolve_input_spec(MOBILENET, {"interpolation": "nearest"}, {}, "f.pth")


def test_a_trained_model_gets_its_backbones_normalisation_and_the_record_round_trips():
    spec = input_spec_of_model(ReidModel("mobilenetV2", neck="bnneck"), (64, 32))
    assert spec.net == "mobilenet_v2" and spec.mean == MOBILENET.mean and spec.normalize_features
    assert resolve_input_spec(MOBILENET, spec.to_meta(), {}, "f.pth") == spec
