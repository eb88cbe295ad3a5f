"""One test-time preprocessing: the PyTorch loaders and the ONNX/INT8 path see bit-identical input."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from bpm.data.transforms import model_input
from bpm.models.input_spec import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD, InputSpec
from bpm.data.transforms import test_transform as make_test_transform
from bpm.data.transforms import image_batch


def _images(count: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (rng.integers(40, 200), rng.integers(20, 90), 3), dtype=np.uint8))
            for _ in range(count)]


def test_torch_transform_and_onnx_batches_are_bit_identical(tmp_path):
    images = _images()
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    transform = make_test_transform((64, 32))
    torch_batch = torch.stack([transform(image) for image in images]).numpy()
    assert torch_batch.dtype == np.float32 and torch_batch.shape == (4, 3, 64, 32)
    assert np.array_equal(torch_batch, image_batch(images, (64, 32)))
    assert np.array_equal(torch_batch, image_batch([str(p) for p in paths], (64, 32)))  # files decode the same


def test_matches_torchvisions_resize_totensor_normalize():
    reference = T.Compose([T.Resize((64, 32), T.InterpolationMode.BILINEAR), T.ToTensor(), T.Normalize(MEAN, STD)])
    for image in _images():
        assert np.allclose(model_input(image, (64, 32)), reference(image).numpy(), rtol=0, atol=1e-6)


def test_raw_input_is_the_resized_pixels():
    image = _images(1)[0]
    raw = model_input(image, InputSpec.for_size((16, 8)).with_(raw_pixels=True))
    assert np.array_equal(raw, np.asarray(image.resize((8, 16), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1))


def test_normalisation_comes_from_the_input_spec():
    """Backbones differ: EfficientNet-Lite's (x - 127) / 128 is mean 127/255, std 128/255 of [0, 1] pixels."""
    from bpm.data.transforms import train_transform

    lite = InputSpec(net="lite", resize_h_w=(16, 8), mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    image = _images(1)[0]
    pixels = np.asarray(image.resize((8, 16), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
    assert np.allclose(model_input(image, lite), (pixels - 127) / 128, rtol=0, atol=1e-5)
    bgr = model_input(image, lite.with_(color="BGR"))
    assert np.array_equal(bgr, model_input(image, lite)[::-1])
    normalize = [step for step in train_transform(lite, mirror=False).transforms if isinstance(step, T.Normalize)]
    assert [tuple(step.mean) for step in normalize] == [lite.mean] and tuple(normalize[0].std) == lite.std
