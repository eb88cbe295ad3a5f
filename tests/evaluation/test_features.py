"""The one extraction path: records through a loader and images by path give the same features."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bpm.data.datasets import build_dataset
from bpm.distributed import DistContext
from bpm.evaluation.features import embed_images, extract_features, image_tensor, l2_normalize
from bpm.data.transforms import image_batch
from bpm.models.input_spec import InputSpec
from bpm.precision import PrecisionPolicy

SIZE = (32, 16)
POLICY = PrecisionPolicy.create("O0")


class TinyConvNet(torch.nn.Module):
    """Asymmetric in width, so a mirrored image gives other features (flip is visible)."""

    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.linspace(0, 1, SIZE[1]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (torch.relu(self.conv(images)) * self.weight).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def gallery(tiny_world):
    return build_dataset("market1501", tiny_world).test_sets[0].gallery[:10]


@pytest.mark.parametrize("flip,normalize", [(False, False), (True, False), (False, True), (True, True)])
def test_records_and_paths_give_bit_identical_features(gallery, flip, normalize):
    model = TinyConvNet()
    by_records = extract_features(model, gallery, POLICY, SIZE, batch_size=4, workers=0, flip=flip,
                                  normalize=normalize)
    by_paths = embed_images(model, [r.path for r in gallery], POLICY, SIZE, batch_size=4, flip=flip,
                            normalize=normalize)
    assert by_records.shape == (10, 6) and by_records.dtype == np.float32
    assert np.array_equal(by_records, by_paths)


def test_flip_averages_with_the_mirror_and_normalize_comes_last(gallery):
    model = TinyConvNet().eval()
    images = image_tensor([r.path for r in gallery], SIZE)
    with torch.no_grad():
        plain, mirrored = model(images), model(torch.flip(images, dims=[3]))
    want = F.normalize((plain + mirrored) / 2, dim=1).numpy()
    got = embed_images(model, [r.path for r in gallery], POLICY, SIZE, flip=True, normalize=True)
    assert not np.allclose(plain.numpy(), mirrored.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_single_process_context_is_no_context(gallery):
    model = TinyConvNet()
    alone = extract_features(model, gallery, POLICY, SIZE, batch_size=4, workers=0)
    assert np.array_equal(alone, extract_features(model, gallery, POLICY, SIZE, batch_size=4, workers=0,
                                                  ctx=DistContext()))


def test_no_images_give_an_empty_array_of_the_feature_size():
    assert embed_images(TinyConvNet(), [], POLICY, SIZE).shape == (0, 6)
    assert extract_features(TinyConvNet(), [], POLICY, SIZE, workers=0).shape == (0, 6)


def test_image_tensor_is_the_runtime_batch(gallery):
    paths = [r.path for r in gallery[:3]]
    assert np.array_equal(image_tensor(paths, SIZE).numpy(), image_batch(paths, SIZE))
    raw = InputSpec.for_size(SIZE).with_(raw_pixels=True)
    assert np.array_equal(image_tensor(paths, raw).numpy(), image_batch(paths, raw))


def test_l2_normalize_is_the_extraction_normalisation():
    rows = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    assert np.array_equal(l2_normalize(rows), F.normalize(torch.from_numpy(rows), dim=1).numpy())
    assert np.array_equal(l2_normalize(np.zeros((1, 3), np.float32)), np.zeros((1, 3), np.float32))
