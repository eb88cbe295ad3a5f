"""EfficientNet-Lite: the torch trunk against an independent NumPy forward pass (tests/efficientnet_numpy.py)
on the real architecture with random weights, the published key layout (generated here, never read
from the shared data folder), output sizes per last stride, export/autocast/channels-last, and
``--net_pretrained_path imagenet`` from a temporary torch hub cache."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import efficientnet_numpy as reference
from bpm.errors import BpmError
from bpm.models.backbones import build_backbone
from bpm.models.backbones.efficientnet_lite import (
    FEATURE_DIM, IMAGENET_FILES, INPUT_MEAN, INPUT_STD, EfficientNetLiteClassifier, EfficientNetLiteTrunk,
    imagenet_to_trunk, variant_of,
)
from bpm.models.imagenet import imagenet_cache_file, init_backbone
from bpm.models.registry import backbones_in, get_backbone
from bpm.models.reid import ReidModel

VARIANTS = list(IMAGENET_FILES)
# Facts of the published files (efficientnet-lite{0,1,2}-*.pth): entries (num_batches_tracked
# included) and elements of all tensors; a layout generated here must have exactly these.
PUBLISHED = {"efficientnet_lite0": (296, 4_694_073), "efficientnet_lite1": (386, 5_470_408),
             "efficientnet_lite2": (386, 6_150_232)}
PUBLISHED_SHAPES = {
    "efficientnet_lite0": {"_blocks.15._depthwise_conv.weight": (1152, 1, 3, 3), "_conv_head.weight": (1280, 320, 1, 1)},
    "efficientnet_lite1": {"_blocks.4._depthwise_conv.weight": (144, 1, 5, 5), "_blocks.20._project_conv.weight": (320, 1152, 1, 1)},
    "efficientnet_lite2": {"_blocks.5._expand_conv.weight": (288, 48, 1, 1), "_blocks.20._project_conv.weight": (352, 1248, 1, 1)},
}
_TO_PUBLISHED_TOP = {"stem.conv.": "_conv_stem.", "stem.bn.": "_bn0.", "top.conv.": "_conv_head.", "top.bn.": "_bn1."}
_TO_PUBLISHED_BLOCK = {"expand.conv": "_expand_conv", "expand.bn": "_bn0", "depthwise.conv": "_depthwise_conv",
                       "depthwise.bn": "_bn1", "project.conv": "_project_conv", "project.bn": "_bn2"}


def randomise_batchnorm(module: torch.nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine terms as after training, so that activations stay in a sane range."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            bn.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def to_published(trunk_state: dict) -> dict:
    """Trunk keys -> the published (efficientnet_pytorch) names, written independently of the module's table."""
    out = {}
    for key, value in trunk_state.items():
        match = re.match(r"^blocks\.(\d+)\.(\w+\.\w+)\.(\w+)$", key)
        if match:
            out[f"_blocks.{match.group(1)}.{_TO_PUBLISHED_BLOCK[match.group(2)]}.{match.group(3)}"] = value
            continue
        prefix = next(p for p in _TO_PUBLISHED_TOP if key.startswith(p))
        out[_TO_PUBLISHED_TOP[prefix] + key[len(prefix):]] = value
    return out


def published_state(variant: str, seed: int = 0) -> dict:
    """A random ImageNet file of ``variant`` in the published layout (classifier included)."""
    torch.manual_seed(seed)
    model = EfficientNetLiteClassifier(variant)
    # He-initialised convolutions: PyTorch's default shrinks the signal over 16+ blocks until every image
    # gives the same output (within 1e-8), and a comparison of outputs would then check nothing.
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    randomise_batchnorm(model, seed)
    state = to_published(model.trunk.state_dict())
    state["_fc.weight"], state["_fc.bias"] = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    return state


def numpy_state(state: dict) -> dict:
    return {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def images(count: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth RGB 0..255 images (a gradient plus blobs), not white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(count):
        img = 127 + 100 * np.sin(rng.uniform(2, 8) * yy[..., None] + rng.uniform(2, 8) * xx[..., None]
                                 + rng.uniform(0, 6, size=3))
        out.append(np.clip(img + rng.normal(0, 10, size=(h, w, 3)), 0, 255).round())
    return np.stack(out)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generated_layout_is_the_published_one_and_maps_back(variant):
    state = published_state(variant)
    count, elements = PUBLISHED[variant]
    assert len(state) == count and sum(v.numel() for v in state.values()) == elements
    for key, shape in PUBLISHED_SHAPES[variant].items():
        assert tuple(state[key].shape) == shape
    trunk = EfficientNetLiteTrunk(variant)
    mapped = imagenet_to_trunk(state)
    assert set(mapped) == set(trunk.state_dict())  # _fc.* dropped, nothing else
    assert to_published(mapped) == {k: v for k, v in state.items() if not k.startswith("_fc.")}
    trunk.load_state_dict(mapped)  # strict: every key and shape
    assert variant_of(state) == variant and variant_of(trunk.state_dict()) == variant
    # The three share every key name: a file that does not record its network is told apart by its shapes.
    assert backbones_in(state) == [(get_backbone(variant), "imagenet")]
    assert backbones_in(trunk.state_dict()) == [(get_backbone(variant), "trunk")]
    assert backbones_in(ReidModel(variant).state_dict()) == [(get_backbone(variant), "model")]


def test_a_shape_no_variant_has_asks_for_the_network():
    state = imagenet_to_trunk(published_state("efficientnet_lite0"))
    state["blocks.15.project.conv.weight"] = torch.zeros(328, 1152, 1, 1)  # a width no variant has
    assert variant_of(state) is None
    assert [spec.name for spec, _level in backbones_in(state)] == list(VARIANTS)


def test_registration_declares_the_published_input_and_layout():
    spec = get_backbone("efficientnet_lite0")
    assert (spec.mean, spec.std, spec.feature_dim) == (INPUT_MEAN, INPUT_STD, FEATURE_DIM)
    assert spec.trunk_first_conv_key == "stem.conv.weight" and spec.last_conv_strides == (1, 2)
    assert spec.imagenet_weights is None and spec.imagenet_file == IMAGENET_FILES["efficientnet_lite0"]


@pytest.mark.parametrize("variant,sizes", [
    ("efficientnet_lite0", [(64, 48), (57, 43)]),  # even and odd sizes: TF SAME pads differently
    ("efficientnet_lite1", [(49, 40)]),
    ("efficientnet_lite2", [(64, 33)]),
])
def test_logits_match_the_numpy_forward_pass(variant, sizes):
    state = published_state(variant, seed=1)
    model = EfficientNetLiteClassifier(variant).eval()
    model.load_imagenet(state)
    ref = numpy_state(state)
    for (h, w) in sizes:
        for index, image in enumerate(images(2, h, w, seed=h * w)):
            x = reference.normalise(image)
            want = reference.logits(ref, x)
            with torch.no_grad():
                got = model(torch.from_numpy(x[None]).float())[0].double().numpy()
            scale = np.abs(want).max()
            assert scale > 1e-3  # the comparison means something
            assert np.abs(got - want).max() / scale < 1e-4, (variant, h, w, index)


def test_features_with_last_stride_1_match_the_numpy_forward_pass():
    state = published_state("efficientnet_lite0", seed=2)
    trunk = EfficientNetLiteTrunk("efficientnet_lite0", last_conv_stride=1).eval()
    trunk.load_state_dict(imagenet_to_trunk(state))
    x = reference.normalise(images(1, 64, 32, seed=3)[0])
    want = reference.features(numpy_state(state), x, last_stride=1)
    with torch.no_grad():
        got = trunk(torch.from_numpy(x[None]).float())[0].double().numpy()
    assert got.shape == want.shape == (FEATURE_DIM, 4, 2)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_input_normalisation_is_the_published_one():
    rgb = np.array([0.0, 127.0, 255.0])
    assert np.allclose((rgb / 255 - np.array(INPUT_MEAN)) / np.array(INPUT_STD), (rgb - 127) / 128)


@pytest.mark.parametrize("stride,sizes", [(2, {(128, 64): (4, 2), (256, 128): (8, 4)}),
                                          (1, {(128, 64): (8, 4), (256, 128): (16, 8)})])
def test_output_size_per_last_stride(stride, sizes):
    trunk = build_backbone("efficientnet_lite0", stride).eval()
    for (h, w), hw in sizes.items():
        with torch.no_grad():
            assert tuple(trunk(torch.zeros(1, 3, h, w)).shape) == (1, FEATURE_DIM, *hw)


def test_last_stride_changes_one_depthwise_convolution_only():
    one, two = EfficientNetLiteTrunk("efficientnet_lite0", 1), EfficientNetLiteTrunk("efficientnet_lite0", 2)
    strides = [(m.conv.stride, n.conv.stride) for m, n in zip(one.modules(), two.modules()) if hasattr(m, "conv")]
    assert sum(a != b for a, b in strides) == 1 and ((1, 1), (2, 2)) in strides
    assert set(one.state_dict()) == set(two.state_dict())


def test_bad_variant_and_stride_are_one_line_errors():
    with pytest.raises(BpmError, match="efficientnet_lite7"):
        EfficientNetLiteTrunk("efficientnet_lite7")
    with pytest.raises(BpmError, match="--last_conv_stride"):
        EfficientNetLiteTrunk("efficientnet_lite0", 3)


def test_onnx_export_autocast_and_channels_last_agree(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    trunk = EfficientNetLiteTrunk("efficientnet_lite0", 1).eval()
    randomise_batchnorm(trunk, 4)
    x = torch.randn(2, 3, 65, 34)  # odd height: the padding of stride 2 depends on it
    with torch.no_grad():
        want = trunk(x)
        fast = trunk.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = trunk(x)
    trunk.to(memory_format=torch.contiguous_format)
    scale = want.abs().max()
    assert (fast - want).abs().max() / scale < 1e-4
    assert low.dtype == torch.bfloat16 and (low.float() - want).abs().max() / scale < 0.1
    path = tmp_path / "lite0.onnx"
    torch.onnx.export(trunk, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["features"], dynamic_axes={"images": {0: "batch"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x[:1].numpy()})[0]  # another batch size than exported
    assert np.abs(got - want[:1].numpy()).max() / scale.item() < 1e-4


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    return home


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite2"])
def test_imagenet_from_the_torch_hub_cache(variant, torch_home):
    spec = get_backbone(variant)
    cached = imagenet_cache_file(spec)
    assert cached == torch_home / "hub" / "checkpoints" / IMAGENET_FILES[variant]
    state = published_state(variant, seed=5)
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    model = ReidModel(variant)
    lines = []
    init_backbone(model, "imagenet", log=lines.append)
    assert lines == [f"Initial weights: ImageNet ({IMAGENET_FILES[variant]}) from {cached}"]
    assert torch.equal(model.base.stem.conv.weight, state["_conv_stem.weight"])
    assert torch.equal(model.base.top.bn.running_var, state["_bn1.running_var"])


def test_imagenet_missing_from_the_cache_is_one_line(torch_home):
    with pytest.raises(BpmError) as info:
        init_backbone(ReidModel("efficientnet_lite1"), "imagenet", log=lambda line: None)
    message = str(info.value)
    assert "\n" not in message and IMAGENET_FILES["efficientnet_lite1"] in message
    assert f"{torch_home / 'hub' / 'checkpoints'}/" in message and "--net_pretrained_path none" in message


def test_imagenet_local_file_and_other_variant_refused(tmp_path):
    path = tmp_path / "lite0.pth"
    state = published_state("efficientnet_lite0", seed=6)
    torch.save(state, path)
    model = ReidModel("efficientnet_lite0")
    lines = []
    init_backbone(model, str(path), log=lines.append)
    assert lines == [f"Initial weights: {path} (efficientnet_pytorch layout)"]
    assert torch.equal(model.base.blocks[15].project.conv.weight, state["_blocks.15._project_conv.weight"])
    with pytest.raises(BpmError, match="holds efficientnet_lite0 weights, but --net is efficientnet_lite1"):
        init_backbone(ReidModel("efficientnet_lite1"), str(path), log=lambda line: None)


def _train(world, exp_dir, *extra: str) -> int:
    from bpm.cli import main

    return main(["train", "-d", "()", "--dataset", "market1501", "--data_root", str(world), "--exp_dir", str(exp_dir),
                 "--net", "efficientnet_lite0", "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2",
                 "--workers", "0", "--set_seed", "true", "--rerank", "false", "--steps_per_log", "0",
                 "--log_to_file", "false", *extra])


def test_trains_from_the_cached_imagenet_file(tiny_world, tmp_path, torch_home):
    import json

    cached = imagenet_cache_file(get_backbone("efficientnet_lite0"))
    cached.parent.mkdir(parents=True)
    torch.save(published_state("efficientnet_lite0", seed=7), cached)
    exp_dir = tmp_path / "exp"
    assert _train(tiny_world, exp_dir, "--total_epochs", "1", "--ids_per_batch", "16", "--sampler_epoch", "ids",
                  "--net_pretrained_path", "imagenet") == 0
    config = json.loads((exp_dir / "config.json").read_text())
    assert config["net"] == "efficientnet_lite0"
    assert 0.0 <= json.loads((exp_dir / "results.json").read_text())["mAP"] <= 1.0


@pytest.mark.slow
def test_trained_model_exports_fp32_and_int8(tiny_world, tmp_path):
    import json

    from bpm.cli import main

    exp_dir = tmp_path / "exp"
    assert _train(tiny_world, exp_dir, "--total_epochs", "2", "--net_pretrained_path", "none") == 0
    out = tmp_path / "export"
    assert main(["export", "--weights", str(exp_dir / "ckpt.pth"), "--out", str(out), "--formats", "pt,onnx,onnx_int8",
                 "--resize_h_w", "(64, 32)", "--calib_images", str(tiny_world / "bounding_box_train")]) == 0
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] is True


def test_its_normalisation_travels_from_checkpoint_through_test_and_export_to_features(tiny_world, tmp_path):
    """(x - 127) / 128, not the ImageNet mean/std, from training to every file and every reader: the
    checkpoint, the weights file and the ONNX graph record it; ``bpm test``, the exported graph and
    FeatureExtractor of each file embed the same images into the same features."""
    from dataclasses import replace

    from bpm.cli import main
    from bpm.commands import train
    from bpm.evaluation.features import l2_normalize
    from bpm.evaluation.features_file import read_features_file
    from bpm.models.onnx_graph import read_spec
    from bpm.export.pipeline import ExportOptions, run_export
    from bpm.inference import FeatureExtractor
    from bpm.models.input_spec import IMAGENET_MEAN, IMAGENET_STD
    from bpm.models.meta import stored_meta
    from train_helpers import train_args

    start = tmp_path / "lite0_imagenet.pth"  # a random start embeds every image alike (published_state)
    torch.save(published_state("efficientnet_lite0", seed=8), start)
    exp = tmp_path / "run"
    args = train_args(tiny_world, exp, "--net", "efficientnet_lite0", "--total_epochs", "1", "--recipe", "softmax",
                      "--ids_per_batch", "16", "--sampler_epoch", "ids", "--net_pretrained_path", str(start))
    assert train.run(args) == 0
    ckpt = exp / "ckpt.pth"
    raw = torch.load(ckpt, weights_only=True)
    assert raw["global_step"] == 1 and raw["input"]["net"] == "efficientnet_lite0"
    assert (raw["input"]["mean"], raw["input"]["std"]) == (list(INPUT_MEAN), list(INPUT_STD))

    saved = tmp_path / "test_features.h5"
    assert main(["test", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--exp_dir",
                 str(tmp_path / "test"), "--model_weight_file", str(ckpt), "--workers", "0", "--rerank", "false",
                 "--log_to_file", "false", "--test_flip", "false", "--save_features", str(saved)]) == 0
    query = next(split for name, split in read_features_file(saved).splits.items() if name.endswith("/query"))
    images = query.paths[:6]

    out = tmp_path / "export"
    result = run_export(ExportOptions(weights=str(ckpt), out_dir=str(out), formats=("pt", "onnx"),
                                      calib_images=str(tiny_world / "bounding_box_train"), verify_count=4),
                        log=lambda line: None)
    pt, onnx_file = result["files"]["pt"], result["files"]["onnx"]
    pt_meta = stored_meta(torch.load(pt, weights_only=True))
    onnx_meta = json.loads(read_spec(onnx_file).input_meta)
    for meta in (pt_meta, onnx_meta):
        assert meta["net"] == "efficientnet_lite0"
        assert (meta["mean"], meta["std"]) == (list(INPUT_MEAN), list(INPUT_STD))

    extractor = FeatureExtractor(ckpt)
    assert extractor.input_spec.mean == INPUT_MEAN and extractor.input_spec.std == INPUT_STD
    from_ckpt = extractor(images)
    np.testing.assert_array_equal(FeatureExtractor(pt)(images), from_ckpt)  # the same weights, the same torch
    np.testing.assert_allclose(FeatureExtractor(onnx_file)(images), from_ckpt, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l2_normalize(query.features[:6]), l2_normalize(from_ckpt), rtol=1e-4, atol=1e-5)
    # The comparison can fail: the ImageNet normalisation embeds these images differently.
    extractor.input_spec = replace(extractor.input_spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert np.abs(extractor(images) - from_ckpt).max() > 1e-2
