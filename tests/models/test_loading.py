"""``bpm.load_model``: one loader for every file kind, and the InputSpec resolved once
(explicit keyword > the file's record > the backbone's default)."""
from __future__ import annotations

import json

import pytest
import torch

import bpm
from bpm.cli import main
from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, export_onnx
from bpm.export.weights import save_pt, save_safetensors, weights_state
from bpm.models import registry
from bpm.models.input_spec import IMAGENET_MEAN, InputSpec
from bpm.models.meta import META_KEY, file_meta, safetensors_metadata
from bpm.models.registry import get_backbone
from bpm.models.reid import build_model

SIZE = (64, 32)


def _spec(model, **changes) -> InputSpec:
    return InputSpec(net=model.net, resize_h_w=SIZE, feature_dim=model.feature_dim, pooling="gem", neck="bnneck",
                     normalize_features=True, **changes)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mobilenet_v2", pooling="gem", neck="bnneck").eval()


def test_a_backbone_name_gives_a_random_model_with_the_backbones_spec():
    model, spec = bpm.load_model("mobilenetV2", neck="bnneck")
    backbone = get_backbone("mobilenet_v2")
    assert model.net == spec.net == "mobilenet_v2" and not model.training and model.head is None
    assert (spec.mean, spec.std, spec.feature_dim) == (backbone.mean, backbone.std, backbone.feature_dim)
    assert spec.resize_h_w == (256, 128) and spec.neck == "bnneck" and spec.normalize_features


def test_every_file_records_its_spec_and_gives_it_back(model, tmp_path):
    spec = _spec(model, std=(0.5, 0.5, 0.5))  # a recorded std that is no backbone default comes back as recorded
    meta = file_meta(spec, recipe="bot")
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dicts": [model.state_dict(), {}], "ep": 1, "scores": 0, META_KEY: meta}, ckpt)
    state = weights_state(model)
    pt = save_pt(state, tmp_path / "w.pt", meta)
    st = save_safetensors(state, tmp_path / "w.safetensors", safetensors_metadata(meta))
    onnx = export_onnx(model, tmp_path / "w.onnx", OnnxSpec(model.net, SIZE, input_meta=json.dumps(meta)))
    for path in (ckpt, pt, st, onnx):
        loaded, got = bpm.load_model(path)
        assert got == spec, path
        assert loaded.feature_dim == 1280
    assert bpm.load_model(ckpt)[0].source_meta["recipe"] == "bot"


def test_explicit_values_win_over_the_record_with_a_warning(model, tmp_path, capsys):
    path = save_pt(weights_state(model), tmp_path / "w.pt", file_meta(_spec(model)))
    _model, spec = bpm.load_model(path, resize_h_w=(128, 64), normalize_features=False)
    assert spec.resize_h_w == (128, 64) and not spec.normalize_features
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: --resize_h_w (128, 64) differs from the (64, 32) that {path} was trained with; "
                   "using (128, 64)",
                   f"warning: --normalize_feature False differs from the True that {path} was trained with; "
                   "using False"]


def test_meta_less_files_fall_back_to_key_reading_and_backbone_defaults(model, tmp_path, monkeypatch):
    """The original's releases record nothing: the first layer's key names the network, the keys the
    neck and pooling, the backbone its normalisation. A file with a record is never guessed at."""
    bare = tmp_path / "original.pth"
    torch.save(model.state_dict(), bare)
    loaded, spec = bpm.load_model(bare)
    assert loaded.source_meta == {} and loaded.source_kind == "re-ID weights"
    assert spec == InputSpec(net="mobilenet_v2", feature_dim=1280, pooling="gem", neck="bnneck",
                             normalize_features=True)
    assert spec.mean == IMAGENET_MEAN and spec.resize_h_w == (256, 128)

    recorded = save_pt(weights_state(model), tmp_path / "w.pt", file_meta(_spec(model)))

    def no_guessing(state):
        raise AssertionError("a file that records its network must not be recognised by its keys")

    monkeypatch.setattr(registry, "backbones_in", no_guessing)
    monkeypatch.setattr("bpm.models.weights.backbones_in", no_guessing)
    assert bpm.load_model(recorded)[1].net == "mobilenet_v2"
    with pytest.raises(AssertionError, match="must not be recognised"):
        bpm.load_model(bare)


def test_a_file_without_a_record_or_a_known_first_layer_asks_for_net(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(BpmError) as info:
        bpm.load_model(path)
    assert str(info.value) == (f"{path}: records no network and it holds no registered network's first layer; "
                               "pass --net <network>")


def test_older_checkpoints_naming_mobilenetV2_still_load(model, tmp_path):
    """Files written before the canonical name record ``mobilenetV2`` (and may record a last stride of 2,
    which never changed MobileNet-V2)."""
    meta = {**file_meta(_spec(model)), "net": "mobilenetV2", "last_conv_stride": 2}
    path = tmp_path / "old.pth"
    torch.save({"state_dicts": [model.state_dict(), {}], "ep": 1, "scores": 0, META_KEY: meta, "net": "mobilenetV2"},
               path)
    loaded, spec = bpm.load_model(path)
    assert loaded.net == spec.net == "mobilenet_v2" and spec.last_conv_stride == 1


def test_last_conv_stride_2_is_refused_for_mobilenet_v2(model, tmp_path, tiny_world, capsys):
    with pytest.raises(BpmError, match="--last_conv_stride 2: --net mobilenet_v2 takes 1"):
        bpm.load_model("mobilenet_v2", last_conv_stride=2)
    path = save_pt(weights_state(model), tmp_path / "w.pt", file_meta(_spec(model)))
    common = ["-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--net", "mobilenetV2",
              "--last_conv_stride", "2", "--log_to_file", "false", "--workers", "0"]
    for command in (["test", "--model_weight_file", str(path), "--exp_dir", str(tmp_path / "t")],
                    ["train", "--net_pretrained_path", "none", "--exp_dir", str(tmp_path / "r")]):
        assert main([command[0], *common, *command[1:]]) == 2
        err = capsys.readouterr().err
        assert err == "error: --last_conv_stride 2: --net mobilenet_v2 takes 1 (it has no last-stride switch)\n"
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_net_naming_another_network_than_the_file_holds_is_one_error_without_a_using_warning(model, tmp_path,
                                                                                             capsys):
    """The weights are checked before the warning: no "using resnet50" followed by an error."""
    path = save_pt(weights_state(model), tmp_path / "w.pt", file_meta(_spec(model)))
    with pytest.raises(BpmError, match=r"w.pt: holds mobilenet_v2 weights, but --net is resnet50"):
        bpm.load_model(path, net="resnet50")
    assert "using resnet50" not in capsys.readouterr().err
