"""``--net_pretrained_path``: ImageNet weights through torchvision's API and torch's hub cache,
``none``, and local files in every layout. Nothing here touches the network: the hub cache is a
temporary TORCH_HOME and torch.hub's download function is replaced."""
import os
import re
import socket
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import pytest
import torch
from torchvision.models import mobilenet_v2, resnet50

from bpm.cli import main
from bpm.errors import BpmError
from bpm.models.imagenet import imagenet_cache_file, init_backbone
from bpm.models.registry import get_backbone
from bpm.models.reid import ReidModel

TORCHVISION = {"resnet50": resnet50, "mobilenetV2": mobilenet_v2, "mobilenet_v2": mobilenet_v2}
FILE_NAMES = {"resnet50": "resnet50-0676ba61.pth", "mobilenetV2": "mobilenet_v2-b0353104.pth"}  # IMAGENET1K_V1


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def downloads(monkeypatch):
    """torch.hub's download, replaced: records each call and fails as it does offline (URLError)."""
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return calls


def first_layer(model: ReidModel) -> torch.Tensor:
    return model.base.base.conv1.weight if model.net == "resnet50" else model.base.features[0][0].weight


def write_cached(net: str, torch_home: Path) -> torch.nn.Module:
    """What torchvision's weights API leaves in the cache: the state_dict of the torchvision model (random here)."""
    url = get_backbone(net).imagenet_weights.url
    path = torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(url).path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = TORCHVISION[net](weights=None)
    torch.save(source.state_dict(), path)
    return source


def tonylins_layout(state: dict) -> dict:
    """torchvision MobileNet-V2 keys -> the original mobilenet_v2.pth.tar keys (flat blocks, no counters)."""
    expand = {"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7}
    plain = {"0.0": 0, "0.1": 1, "1": 3, "2": 4}  # block 1 has no expansion layer
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        match = re.match(r"^features\.(\d+)\.conv\.(\d+(?:\.\d+)?)\.([a-z_]+)$", key)
        if match:
            block, nested, leaf = match.groups()
            flat = (plain if block == "1" else expand)[nested]
            key = f"features.{block}.conv.{flat}.{leaf}"
        out[key] = value
    return out


@pytest.mark.parametrize("net", ["mobilenetV2", "resnet50"])
def test_imagenet_from_torch_hub_cache(net, torch_home, downloads):
    spec = get_backbone(net)
    assert imagenet_cache_file(spec) == torch_home / "hub" / "checkpoints" / FILE_NAMES[net]
    source = write_cached(net, torch_home)
    model = ReidModel(net)
    lines = []
    init_backbone(model, "imagenet", log=lines.append)
    want = source.conv1.weight if net == "resnet50" else source.features[0][0].weight
    assert torch.equal(first_layer(model), want)
    last = model.base.base.layer4[2].bn3.running_var if net == "resnet50" else model.base.features[18][1].running_var
    want_last = source.layer4[2].bn3.running_var if net == "resnet50" else source.features[18][1].running_var
    assert torch.equal(last, want_last)
    assert lines == [f"Initial weights: ImageNet (torchvision {spec.imagenet_name}) from {imagenet_cache_file(spec)}"]
    assert f"{type(spec.imagenet_weights).__name__}.IMAGENET1K_V1" in lines[0]
    assert downloads == []  # the cached file is used, the network is not asked


def test_imagenet_download_goes_through_torchvision_once(torch_home, monkeypatch):
    """No cached file: torchvision's API downloads it (hash prefix from the file name), later runs reuse it."""
    source = mobilenet_v2(weights=None)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(source.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    spec = get_backbone("mobilenetV2")
    lines = []
    init_backbone(ReidModel("mobilenetV2"), "ImageNet", log=lines.append, progress=False)
    assert calls == [(spec.imagenet_weights.url, "b0353104")]
    assert lines[0].startswith("Initial weights: ImageNet (torchvision MobileNet_V2_Weights.IMAGENET1K_V1) downloading")
    assert imagenet_cache_file(spec).is_file()
    model = ReidModel("mobilenetV2")
    init_backbone(model, "imagenet", log=lines.append)
    assert len(calls) == 1 and lines[1].endswith(f"from {imagenet_cache_file(spec)}")
    assert torch.equal(first_layer(model), source.features[0][0].weight)


@pytest.mark.parametrize("failure", [URLError("offline"), TimeoutError("timed out"), ConnectionResetError(104, "reset")])
@pytest.mark.parametrize("net", ["mobilenetV2", "resnet50"])
def test_offline_without_cached_file_is_one_line(net, failure, torch_home, monkeypatch):
    calls = []

    def fail(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise failure

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(BpmError) as info:
        init_backbone(ReidModel(net), "imagenet", log=lambda line: None)
    message = str(info.value)
    assert len(calls) == 1 and "\n" not in message
    folder = torch_home / "hub" / "checkpoints"
    assert FILE_NAMES[net] in message and f"{folder}/" in message
    assert "--net_pretrained_path none" in message and "local" in message


def test_training_default_is_imagenet_and_offline_is_exit_2(torch_home, downloads, tiny_world, tmp_path, capsys):
    exp_dir = tmp_path / "exp"
    assert main(["train", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world),
                 "--exp_dir", str(exp_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --net_pretrained_path imagenet") and err.count("\n") == 1
    assert FILE_NAMES["mobilenetV2"] in err and len(downloads) == 1
    assert not exp_dir.exists()


def test_corrupt_cached_file_says_to_delete_it(torch_home, downloads):
    cached = imagenet_cache_file(get_backbone("mobilenetV2"))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 an interrupted copy")
    with pytest.raises(BpmError) as info:
        init_backbone(ReidModel("mobilenetV2"), "imagenet", log=lambda line: None)
    message = str(info.value)
    assert str(cached) in message and "delete it" in message and "\n" not in message and downloads == []


@pytest.mark.parametrize("value", ["none", "", "None"])
def test_none_keeps_random_weights(value, torch_home, downloads):
    model = ReidModel("mobilenetV2")
    before = first_layer(model).clone()
    lines = []
    init_backbone(model, value, log=lines.append)
    assert torch.equal(first_layer(model), before) and downloads == []
    assert lines == [f"Initial weights: random (--net_pretrained_path {value or repr('')})"]


@pytest.mark.parametrize("net", ["mobilenetV2", "resnet50"])
def test_local_file_in_torchvision_layout(net, tmp_path, downloads):
    source = TORCHVISION[net](weights=None)
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)  # with the classifier, which is dropped
    model = ReidModel(net)
    lines = []
    init_backbone(model, str(path), log=lines.append)
    assert torch.equal(first_layer(model), source.conv1.weight if net == "resnet50" else source.features[0][0].weight)
    assert lines == [f"Initial weights: {path} (torchvision layout)"] and downloads == []


def test_local_file_in_tonylins_layout(tmp_path):
    source = mobilenet_v2(weights=None)
    state = tonylins_layout(source.state_dict())
    assert "features.1.conv.3.weight" in state and "features.2.conv.7.running_var" in state
    path = tmp_path / "mobilenet_v2.pth.tar"
    torch.save(state, path)
    model = ReidModel("mobilenetV2")
    lines = []
    init_backbone(model, str(path), log=lines.append)
    assert lines == [f"Initial weights: {path} (tonylins layout)"]
    assert torch.equal(model.base.features[1].conv[1].weight, source.features[1].conv[1].weight)
    assert torch.equal(model.base.features[17].conv[2].weight, source.features[17].conv[2].weight)
    assert torch.equal(model.base.features[18][1].running_mean, source.features[18][1].running_mean)


@pytest.mark.parametrize("net", ["mobilenetV2", "resnet50"])
def test_local_reid_checkpoint_initialises_the_backbone(net, tmp_path):
    trained = ReidModel(net)
    state = trained.state_dict()
    state["neck.bn.weight"] = torch.ones(trained.feature_dim)  # parts beyond the backbone are not the backbone's
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dicts": [state, {}], "ep": 3, "scores": 0}, path)
    model = ReidModel(net)
    lines = []
    init_backbone(model, str(path), log=lines.append)
    assert torch.equal(first_layer(model), first_layer(trained))
    assert lines == [f"Initial weights: {path} (re-ID weights, backbone only)"]


def test_local_file_problems_are_one_line(tmp_path):
    with pytest.raises(BpmError, match="--net_pretrained_path: .*missing.pth: no such file"):
        init_backbone(ReidModel("mobilenetV2"), str(tmp_path / "missing.pth"), log=lambda line: None)
    other = tmp_path / "resnet.pth"
    torch.save(resnet50(weights=None).state_dict(), other)
    with pytest.raises(BpmError, match="holds resnet50 weights, but --net is mobilenet_v2"):
        init_backbone(ReidModel("mobilenetV2"), str(other), log=lambda line: None)
    partial = tmp_path / "partial.pth"
    state = mobilenet_v2(weights=None).state_dict()
    state.pop("features.18.0.weight")
    torch.save(state, partial)
    with pytest.raises(BpmError, match="partial.pth: does not match the mobilenet_v2 backbone: 1 missing"):
        init_backbone(ReidModel("mobilenetV2"), str(partial), log=lambda line: None)


def _weights_without_counters(model: ReidModel) -> dict:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_torchvision_and_tonylins_imagenet_files_give_the_same_network(torch_home, downloads, tmp_path):
    """torchvision's MobileNet-V2 file (features.*, classifier.1.*) through --net_pretrained_path imagenet and
    the original's tonylins layout of the same weights through --net_pretrained_path FILE (and bpm.load_model)."""
    import bpm

    source = write_cached("mobilenet_v2", torch_home)
    assert any(k.startswith("classifier.1.") for k in source.state_dict())
    tonylins = tmp_path / "mobilenet_v2.pth.tar"
    torch.save(tonylins_layout(source.state_dict()), tonylins)
    from_cache, from_file = ReidModel("mobilenet_v2"), ReidModel("mobilenetV2")
    init_backbone(from_cache, "imagenet", log=lambda line: None)
    init_backbone(from_file, str(tonylins), log=lambda line: None)
    want = _weights_without_counters(from_cache)
    assert set(want) == set(_weights_without_counters(from_file))
    assert all(torch.equal(want[k], v) for k, v in _weights_without_counters(from_file).items())
    for path in (tonylins, imagenet_cache_file(get_backbone("mobilenet_v2"))):
        loaded, spec = bpm.load_model(path)
        assert loaded.source_kind == "ImageNet classifier weights (backbone only)" and spec.net == "mobilenet_v2"
        assert all(torch.equal(want[k], v) for k, v in _weights_without_counters(loaded).items())
    assert downloads == []


def test_a_backbone_torchvision_lacks_reads_its_imagenet_file_from_the_hub_cache(torch_home, monkeypatch):
    """EfficientNet-Lite has no torchvision weights: its registry entry names a file in the hub cache."""
    from bpm.models import registry
    from bpm.models.registry import register_backbone

    registry.list_backbones()
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    @register_backbone("hubnet", feature_dim=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv_key="_stem.weight",
                       classifier_prefix="_fc.", imagenet_file="hubnet-12345678.pth",
                       imagenet_to_trunk=lambda state: {k.lstrip("_"): v for k, v in state.items()
                                                        if not k.startswith("_fc.")})
    class HubNet(torch.nn.Module):
        def __init__(self, last_conv_stride: int = 1) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.stem(x)

    spec = get_backbone("hubnet")
    cached = torch_home / "hub" / "checkpoints" / "hubnet-12345678.pth"
    assert imagenet_cache_file(spec) == cached
    with pytest.raises(BpmError) as info:
        init_backbone(ReidModel("hubnet"), "imagenet", log=lambda line: None)
    assert "\n" not in str(info.value) and "hubnet-12345678.pth is not in" in str(info.value)
    cached.parent.mkdir(parents=True)
    weights = {"_stem.weight": torch.randn(4, 3, 3, 3), "_stem.bias": torch.randn(4), "_fc.weight": torch.ones(2, 4)}
    torch.save(weights, cached)
    model, lines = ReidModel("hubnet"), []
    init_backbone(model, "imagenet", log=lines.append)
    assert torch.equal(model.base.stem.weight, weights["_stem.weight"])
    assert lines == [f"Initial weights: ImageNet (hubnet-12345678.pth) from {cached}"]
