"""Every image mode decodes to the 8-bit RGB picture it shows, or is refused (Reliability III, finding 4).

``convert("RGB")`` clips 16-bit and 32-bit pixels at 255 instead of scaling them, so a 16-bit PNG
used to come out all white. The images are generated here: one grey/colour picture saved in each
mode, then compared with its 8-bit RGB original after decoding.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpm.data.images import ImageDecodeError, find_unreadable, read_image, to_rgb


def _grey() -> np.ndarray:
    """A 64x32 picture with every level from dark to bright (a gradient plus a pattern)."""
    y, x = np.mgrid[0:64, 0:32]
    return ((y * 4 + (x % 8) * 2) % 256).astype(np.uint8)


def _colour() -> np.ndarray:
    grey = _grey().astype(np.int32)
    return np.stack([grey, 255 - grey, (grey * 3) % 256], axis=2).astype(np.uint8)


def _decoded(tmp_path, image: Image.Image, name: str) -> np.ndarray:
    path = tmp_path / name
    image.save(path)
    return np.asarray(read_image(str(path)), dtype=np.int32)


def test_a_16_bit_png_decodes_like_its_8_bit_copy(tmp_path):
    grey = _grey()
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # 0..65535, the same picture
    assert sixteen.mode.startswith("I;16")
    got = _decoded(tmp_path, sixteen, "sixteen.png")
    want = np.repeat(grey[:, :, None], 3, axis=2).astype(np.int32)
    assert np.abs(got - want).max() <= 1
    assert not find_unreadable([str(tmp_path / "sixteen.png")])


def test_a_32_bit_integer_image_in_16_bit_range_is_scaled(tmp_path):
    grey = _grey()
    image = Image.fromarray(grey.astype(np.int32) * 257, mode="I")
    got = np.asarray(to_rgb(image), dtype=np.int32)
    assert np.abs(got[:, :, 0] - grey).max() <= 1


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "L", "RGBA", "1"])
def test_eight_bit_modes_decode_to_the_same_picture(tmp_path, mode):
    rgb = Image.fromarray(_colour(), "RGB")
    image = {"P": lambda: rgb.quantize(256), "LA": lambda: rgb.convert("LA"), "CMYK": lambda: rgb.convert("CMYK"),
             "L": lambda: rgb.convert("L"), "RGBA": lambda: rgb.convert("RGBA"), "1": lambda: rgb.convert("1")}[mode]()
    suffix = "tif" if mode == "CMYK" else "png"  # PNG has no CMYK
    got = _decoded(tmp_path, image, f"{mode}.{suffix}")
    want = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert got.shape == want.shape and np.array_equal(got, want)


def test_a_float_image_from_0_to_1_is_scaled_and_one_outside_is_refused(tmp_path):
    grey = _grey()
    unit = Image.fromarray(grey.astype(np.float32) / 255.0, mode="F")
    got = _decoded(tmp_path, unit, "unit.tif")
    assert np.abs(got[:, :, 1] - grey).max() <= 1
    wild = Image.fromarray(grey.astype(np.float32) * 10.0, mode="F")
    wild.save(tmp_path / "wild.tif")
    with pytest.raises(ImageDecodeError, match="wild.tif: .*values from 0 to 1"):
        read_image(str(tmp_path / "wild.tif"))
    assert [p for p, _ in find_unreadable([str(tmp_path / "unit.tif"), str(tmp_path / "wild.tif")])] \
        == [str(tmp_path / "wild.tif")]
