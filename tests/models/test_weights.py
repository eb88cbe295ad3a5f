"""Weights files in every layout we read; tests create them from randomly initialised models."""
import pytest
import torch
from torchvision.models import mobilenet_v2, resnet50

from bpm.errors import BpmError
from bpm.models.reid import ReidModel, build_model
from bpm.models.backbones.mobilenet import convert_tonylins_mobilenet
from bpm.models.weights import load_model_weights

TONYLINS_INDEX = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4"}


def to_tonylins_layout(state: dict) -> dict:
    """Rewrite torchvision MobileNet-V2 keys into the original mobilenet_v2.pth.tar layout (flat blocks)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and len(parts) > 3 and parts[2] == "conv":
            block = int(parts[1])
            nested = ".".join(parts[3:5])
            if block == 1:  # no expansion: [dw conv-bn-relu], conv, bn
                mapping = {"0.0": "0", "0.1": "1"}
                tail = parts[4:] if nested in mapping else parts[4:]
                idx = mapping.get(nested, {"1": "3", "2": "4"}.get(parts[3]))
                tail = parts[5:] if nested in mapping else parts[4:]
            else:
                mapping = TONYLINS_INDEX
                idx = mapping.get(nested, {"2": "6", "3": "7"}.get(parts[3]))
                tail = parts[5:] if nested in mapping else parts[4:]
            key = ".".join(["features", parts[1], "conv", idx, *tail])
        if not key.endswith("num_batches_tracked"):  # old PyTorch files have no such buffers
            out[key] = value
    return out


def models_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k].float(), sb[k].float()) for k in sa if not k.endswith("num_batches_tracked"))


def test_tonylins_layout_maps_back_to_torchvision():
    tv = mobilenet_v2(weights=None).state_dict()
    original = to_tonylins_layout(tv)
    assert "features.1.conv.3.weight" in original and "features.2.conv.7.running_var" in original
    converted = convert_tonylins_mobilenet(original)
    for key, value in converted.items():
        assert torch.equal(tv[key], value)


def test_imagenet_mobilenet_file_in_original_layout(tmp_path):
    tv = mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth.tar"
    torch.save(to_tonylins_layout(tv.state_dict()), path)
    model = build_model("mobilenetV2", pretrained_path=str(path))
    assert torch.equal(model.base.features[17].conv[2].weight, tv.features[17].conv[2].weight)
    assert torch.equal(model.base.features[1].conv[1].weight, tv.features[1].conv[1].weight)


def test_imagenet_resnet_file_in_torchvision_layout(tmp_path):
    tv = resnet50(weights=None)
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(tv.state_dict(), path)
    model = build_model("resnet50", pretrained_path=str(path))
    assert torch.equal(model.base.base.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)


def test_imagenet_file_for_other_net_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    with pytest.raises(BpmError, match="resnet50"):
        build_model("mobilenetV2", pretrained_path=str(path))


@pytest.mark.parametrize("net,prefix", [("resnet50", "base.base."), ("mobilenetV2", "base.features.")])
def test_released_fp16_weights_and_original_checkpoint(tmp_path, net, prefix):
    source = ReidModel(net)
    state = source.state_dict()
    assert any(k.startswith(prefix) for k in state)
    released = tmp_path / "released.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, released)
    target = ReidModel(net)
    load_model_weights(target, released)
    assert models_equal(source.half().float(), target)

    ckpt = tmp_path / "ckpt.pth"
    optimizer = torch.optim.Adam(source.parameters())
    torch.save({"state_dicts": [ReidModel(net).state_dict(), optimizer.state_dict()], "ep": 3, "scores": 0}, ckpt)
    load_model_weights(ReidModel(net), ckpt)


def test_module_prefix_and_mismatch_errors(tmp_path):
    model = ReidModel("mobilenetV2")
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    load_model_weights(ReidModel("mobilenetV2"), path)

    wrong = tmp_path / "wrong.pth"
    torch.save(ReidModel("resnet50").state_dict(), wrong)
    with pytest.raises(BpmError, match="holds resnet50 weights, but --net is mobilenet_v2"):
        load_model_weights(ReidModel("mobilenetV2"), wrong)

    partial = tmp_path / "partial.pth"
    state = model.state_dict()
    state.pop("base.features.18.0.weight")
    torch.save(state, partial)
    with pytest.raises(BpmError, match="missing"):
        load_model_weights(ReidModel("mobilenetV2"), partial)


def test_unsafe_and_corrupt_files_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(BpmError, match="refused"):
        load_model_weights(ReidModel("mobilenetV2"), evil)
    good = tmp_path / "good.pth"
    torch.save(ReidModel("mobilenetV2").state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BpmError, match="truncated or corrupt"):
        load_model_weights(ReidModel("mobilenetV2"), truncated)
    with pytest.raises(BpmError, match="not found"):
        load_model_weights(ReidModel("mobilenetV2"), tmp_path / "missing.pth")


def test_an_hdf5_file_given_as_weights_is_named_as_such(tmp_path):
    """Not "needs more than plain tensors", which sends users looking for unsafe content."""
    import h5py
    import numpy as np

    features = tmp_path / "features.pth"  # the suffix does not decide: the file's first bytes do
    with h5py.File(features, "w") as handle:
        handle["market1501/query/features"] = np.zeros((2, 4), np.float32)
    with pytest.raises(BpmError, match=r"features.pth: an HDF5 file .*not a PyTorch weights file") as refused:
        load_model_weights(ReidModel("mobilenet_v2"), features)
    assert "plain tensors" not in str(refused.value)
