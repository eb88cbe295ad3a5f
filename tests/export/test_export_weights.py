"""Loading every weights layout users have, and refusing what must not be loaded."""
from __future__ import annotations

import os

import pytest
import torch

from bpm.errors import BpmError
from bpm.data.transforms import image_batch
from bpm.export.verify import cosine_rows
from bpm.export.weights import weights_state
from bpm.models.loading import load_model
from bpm.models.reid import build_model

from export_helpers import SIZE


def _features(model, paths):
    with torch.no_grad():
        return model(torch.from_numpy(image_batch(paths, SIZE))).numpy()


def test_original_checkpoint_loads_and_reproduces_features(original_ckpt, mobilenet, image_paths):
    model, spec = load_model(original_ckpt)
    assert model.net == "mobilenet_v2" and model.source_kind == "training checkpoint" and spec.neck == "none"
    torch.testing.assert_close(torch.from_numpy(_features(model, image_paths[:3])),
                               torch.from_numpy(_features(mobilenet, image_paths[:3])))


def test_original_released_fp16_weights_load(tmp_path, mobilenet, image_paths):
    state = {k: v.half() for k, v in mobilenet.state_dict().items() if v.is_floating_point()}
    assert all(k.startswith("base.features.") for k in state)
    path = tmp_path / "model_weight_fp16.pth"
    torch.save(state, path)
    model, _spec = load_model(path)
    assert model.source_kind == "re-ID weights"
    got, want = _features(model, image_paths[:4]), _features(mobilenet, image_paths[:4])
    assert cosine_rows(got, want).min() > 0.999


def _tonylins_key(key: str) -> str:
    """torchvision MobileNet-V2 key -> the original mobilenet_v2.pth.tar key (flat blocks)."""
    parts = key.split(".")
    if len(parts) > 4 and parts[0] == "features" and parts[2] == "conv":
        block = int(parts[1])
        nested = {"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7} if block > 1 \
            else {"0.0": 0, "0.1": 1, "1": 3, "2": 4}
        rest = parts[3:]
        for prefix, flat in nested.items():
            n = prefix.count(".") + 1
            if ".".join(rest[:n]) == prefix and len(rest) > n and not rest[n].isdigit():
                return ".".join(parts[:3] + [str(flat)] + rest[n:])
    return key


def test_tonylins_mobilenet_layout_loads_as_imagenet_backbone(tmp_path, mobilenet, image_paths):
    trunk = {k[len("base."):]: v for k, v in mobilenet.state_dict().items()}
    state = {_tonylins_key(k): v for k, v in trunk.items()}
    assert "features.2.conv.7.weight" in state and "features.1.conv.4.weight" in state
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    state["classifier.1.bias"] = torch.zeros(1000)
    path = tmp_path / "mobilenet_v2.pth.tar"
    torch.save(state, path)
    model, _spec = load_model(path)
    assert model.net == "mobilenet_v2" and model.source_kind.startswith("ImageNet")
    torch.testing.assert_close(torch.from_numpy(_features(model, image_paths[:2])),
                               torch.from_numpy(_features(mobilenet, image_paths[:2])))


def test_weights_of_the_wrong_network_are_refused_clearly(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(build_model("resnet50").state_dict(), path)
    with pytest.raises(BpmError, match="holds resnet50 weights, but --net is mobilenet_v2"):
        load_model(path, net="mobilenetV2")


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickle_that_carries_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _RunsCode()}, path)
    with pytest.raises(BpmError, match="refused"):
        load_model(path, net="mobilenetV2")


def test_o2_weights_are_fp16_with_fp32_batchnorm(mobilenet):
    state = weights_state(mobilenet, "O2", keep_batchnorm_fp32=True)
    assert state["base.features.0.0.weight"].dtype == torch.float16
    assert state["base.features.0.1.running_var"].dtype == torch.float32
    pure = weights_state(mobilenet, "O3", keep_batchnorm_fp32=False)
    assert pure["base.features.0.1.running_var"].dtype == torch.float16
    assert weights_state(mobilenet, "O0")["base.features.0.0.weight"].dtype == torch.float32
