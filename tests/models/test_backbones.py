"""Every registered backbone: output size per input size and stride, declared feature size,
channels-last equivalence; and the registry's lookups and key mappings."""
import copy
import dataclasses
import math

import pytest
import torch
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, mobilenet_v2, resnet50

from bpm.errors import BpmError
from bpm.models.backbones import build_backbone
from bpm.models.registry import BACKBONES, detect_backbone, get_backbone

NAMES = list(BACKBONES)
SIZES = [(256, 128), (96, 48)]


def expected_hw(spec, stride: int, h: int, w: int) -> tuple[int, int]:
    """Every stride-2 stage rounds up (padding): 4 halvings before layer4, a fifth when layer4 keeps stride 2."""
    halvings = 4 if spec.has_last_stride and stride == 1 else 5
    for _ in range(halvings):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def test_registry_holds_the_original_networks():
    assert NAMES == ["resnet50", "mobilenetV2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert get_backbone("resnet50").imagenet_weights is ResNet50_Weights.IMAGENET1K_V1
    assert get_backbone("mobilenetV2").imagenet_weights is MobileNet_V2_Weights.IMAGENET1K_V1
    assert get_backbone("resnet50").has_last_stride and not get_backbone("mobilenetV2").has_last_stride


def test_unknown_backbone_is_one_line_listing_the_choices():
    for call in (lambda: get_backbone("shufflenetV2"), lambda: build_backbone("shufflenetV2")):
        with pytest.raises(BpmError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "--net" in message and "'shufflenetV2'" in message
        assert "resnet50, mobilenetV2" in message


def test_build_backbone_goes_through_the_registry(monkeypatch):
    spec = get_backbone("mobilenetV2")
    built = []

    def build(stride):
        built.append(stride)
        return spec.build(stride)

    monkeypatch.setitem(BACKBONES, "tiny", dataclasses.replace(spec, name="tiny", build=build))
    assert build_backbone("tiny", 2).feature_dim == 1280 and built == [2]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stride", [1, 2])
def test_output_size_and_feature_dim(name, stride):
    spec = get_backbone(name)
    trunk = spec.build(stride).eval()
    assert trunk.feature_dim == spec.feature_dim
    for h, w in SIZES:
        with torch.no_grad():
            out = trunk(torch.randn(2, 3, h, w))
        assert tuple(out.shape) == (2, spec.feature_dim, *expected_hw(spec, stride, h, w)), (name, stride, h, w)


def test_last_stride_only_changes_resnet50():
    assert expected_hw(get_backbone("resnet50"), 1, 256, 128) == (16, 8)  # the original's 16x8 map
    assert expected_hw(get_backbone("resnet50"), 2, 256, 128) == (8, 4)
    for name in NAMES:
        spec = get_backbone(name)
        one, two = spec.build(1).eval(), spec.build(2).eval()
        two.load_state_dict(one.state_dict())
        x = torch.randn(1, 3, 96, 48)
        with torch.no_grad():
            same = one(x).shape == two(x).shape and torch.equal(one(x), two(x))
        assert same != spec.has_last_stride, name
    with pytest.raises(BpmError, match="--last_conv_stride"):
        get_backbone("resnet50").build(3)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_features(name):
    torch.manual_seed(0)
    trunk = get_backbone(name).build(1).eval()
    with torch.no_grad():  # BatchNorm statistics as after training, so activations stay in a sane range
        for module in trunk.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        want = trunk(x)
        fast = copy.deepcopy(trunk).to(memory_format=torch.channels_last)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == want.shape
    scale = want.abs().max().clamp_min(1e-6)
    assert ((got - want).abs().max() / scale).item() < 1e-4


@pytest.mark.parametrize("name,tv", [("resnet50", resnet50), ("mobilenetV2", mobilenet_v2)])
def test_imagenet_keys_map_exactly_onto_the_trunk(name, tv):
    spec = get_backbone(name)
    imagenet = tv(weights=None).state_dict()
    mapped = spec.imagenet_to_trunk(imagenet)
    assert set(mapped) == set(spec.build(1).state_dict())  # the classifier (fc.* / classifier.*) dropped
    assert all(spec.owns_key(k) for k in imagenet)
    assert detect_backbone(imagenet) is spec


@pytest.mark.parametrize("name", NAMES)
def test_detection_from_model_keys_ignores_other_parts(name):
    from bpm.models.reid import ReidModel

    state = ReidModel(name).state_dict()
    assert all(BACKBONES[name].owns_key(k) for k in state if k.startswith("base."))
    # EfficientNet-Lite0/1/2 share key names: the shapes tell them apart (BackboneSpec.matches).
    other = [spec for spec in BACKBONES.values() if spec.key_prefixes != BACKBONES[name].key_prefixes]
    assert not any(spec.owns_key(k) for spec in other for k in state)
    extra = {"neck.bn.weight": torch.ones(3), "head.classifier.weight": torch.ones(2, 3)}
    assert detect_backbone({**state, **extra}) is BACKBONES[name]
    assert detect_backbone(extra) is None
