"""Every registered backbone: output size per input size and stride, declared feature size,
channels-last equivalence; and the registry's decorator, lookups and key mappings."""
import copy
import math

import pytest
import torch
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, mobilenet_v2, resnet50

from bpm.errors import BpmError
from bpm.models import registry
from bpm.models.backbones import build_backbone
from bpm.models.registry import backbones_in, get_backbone, list_backbones, register_backbone

NAMES = list_backbones()
SIZES = [(256, 128), (96, 48)]


def has_last_stride(spec) -> bool:
    return 2 in spec.last_conv_strides


def expected_hw(spec, stride: int, h: int, w: int) -> tuple[int, int]:
    """Every stride-2 stage rounds up (padding): 4 halvings before layer4, a fifth when layer4 keeps stride 2."""
    halvings = 4 if has_last_stride(spec) and stride == 1 else 5
    for _ in range(halvings):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test (registrations in a test do not leak)."""
    list_backbones()
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def test_registry_holds_the_original_networks():
    assert sorted(NAMES) == ["mobilenet_v2", "resnet50"]
    assert get_backbone("resnet50").imagenet_weights is ResNet50_Weights.IMAGENET1K_V1
    assert get_backbone("mobilenet_v2").imagenet_weights is MobileNet_V2_Weights.IMAGENET1K_V1
    assert get_backbone("mobilenetV2") is get_backbone("mobilenet_v2")  # the original's spelling stays accepted
    assert has_last_stride(get_backbone("resnet50")) and not has_last_stride(get_backbone("mobilenet_v2"))
    assert get_backbone("resnet50").classifier_prefix == "fc."
    assert get_backbone("mobilenet_v2").classifier_prefix == "classifier."


def test_unknown_backbone_is_one_line_listing_the_choices():
    for call in (lambda: get_backbone("shufflenetV2"), lambda: build_backbone("shufflenetV2")):
        with pytest.raises(BpmError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "--net" in message and "'shufflenetV2'" in message
        assert all(name in message for name in NAMES)


def _toy_builder(last_conv_stride: int = 1) -> torch.nn.Module:
    return torch.nn.Conv2d(3, 4, 3, stride=2)


TOY = dict(feature_dim=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv_key="conv.weight",
           classifier_prefix="head.", imagenet_to_trunk=lambda state: {"weight": state["conv.weight"]},
           imagenet_file="toy-00000000.pth")


def test_build_backbone_goes_through_the_registry(scratch_registry):
    built = []

    @register_backbone("tiny", **TOY)
    def build(stride):
        built.append(stride)
        return _toy_builder(stride)

    assert "tiny" in list_backbones() and isinstance(build_backbone("tiny", 1), torch.nn.Conv2d) and built == [1]


def test_duplicate_names_are_refused(scratch_registry):
    register_backbone("tiny", aliases=("tinyV1",), **TOY)(_toy_builder)
    for name, aliases in (("tiny", ()), ("other", ("tinyV1",)), ("mobilenetV2", ())):
        with pytest.raises(BpmError, match="already registered") as info:
            register_backbone(name, aliases=aliases, **TOY)(_toy_builder)
        assert "\n" not in str(info.value)


def test_a_backbone_needs_an_imagenet_source(scratch_registry):
    with pytest.raises(BpmError, match="imagenet_weights .*or imagenet_file"):
        register_backbone("tiny", **{**TOY, "imagenet_file": ""})(_toy_builder)


def test_last_conv_stride_is_refused_where_the_backbone_has_no_switch():
    with pytest.raises(BpmError) as info:
        build_backbone("mobilenetV2", 2)
    assert str(info.value) == "--last_conv_stride 2: --net mobilenet_v2 takes 1 (it has no last-stride switch)"
    assert build_backbone("resnet50", 2) is not None


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
        assert same != has_last_stride(spec), name
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


@pytest.mark.parametrize("name,tv", [("resnet50", resnet50), ("mobilenet_v2", mobilenet_v2)])
def test_imagenet_keys_map_exactly_onto_the_trunk(name, tv):
    spec = get_backbone(name)
    imagenet = tv(weights=None).state_dict()
    mapped = spec.imagenet_to_trunk(imagenet)
    assert set(mapped) == set(spec.build(1).state_dict())  # the classifier (fc.* / classifier.*) dropped
    assert any(k.startswith(spec.classifier_prefix) for k in imagenet)
    assert backbones_in(imagenet) == [(spec, "imagenet")]


@pytest.mark.parametrize("name", NAMES)
def test_meta_less_files_are_recognised_by_their_first_layer(name):
    from bpm.models.reid import ReidModel

    spec = get_backbone(name)
    state = ReidModel(name).state_dict()
    extra = {"neck.bn.weight": torch.ones(3), "head.classifier.weight": torch.ones(2, 3)}
    assert backbones_in({**state, **extra}) == [(spec, "model")]
    trunk = spec.build(1).state_dict()
    assert backbones_in(trunk) == [(spec, "imagenet" if spec.trunk_first_conv_key == spec.first_conv_key else "trunk")]
    assert backbones_in(extra) == []
