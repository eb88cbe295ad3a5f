"""Decoding images from disk with errors that name the file, and checking many at once."""
from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from bpm.errors import BpmError

# A decompression bomb (a few KB declaring 20000x20000 pixels) is a bad image, not a traceback:
# PIL raises DecompressionBombError above 2x its MAX_IMAGE_PIXELS and only warns between 1x and 2x,
# so both are turned into errors by opening images with warnings as errors for that one warning.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning, MemoryError)


def _regular_file(path: str) -> None:
    """Refuse anything but a regular file before opening it: a FIFO named ``*.jpg`` would block
    ``open`` forever, and a device file (``/dev/zero``) never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise ImageDecodeError(f"{path}: not a regular file (a FIFO, device or folder is never an image)")


def _open(path: str) -> Image.Image:
    import warnings

    _regular_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


class ImageDecodeError(BpmError):
    """An image that does not decode, with a message of one line even when raised in a loader worker.

    A DataLoader worker's exception is re-raised in the main process as ``type(text)`` where
    ``text`` is the worker's whole traceback; keep only its last line, our own message.
    """

    def __init__(self, message: str) -> None:
        if "\nOriginal Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(f"{ImageDecodeError.__name__}: ", 1)[-1]
        super().__init__(message)


# Integer modes wider than 8 bits; PIL's convert("RGB") clips them at 255 (a 16-bit PNG came out white).
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image, where: str = "image") -> Image.Image:
    """``image`` as the 8-bit RGB picture it shows.

    8-bit modes (L, P, LA, RGBA, CMYK, 1, ...) go through PIL's own conversion. 16-bit integer
    pixels are scaled by 255/65535 (``I`` mode too, when its values fit 16 bits, as 16-bit PNGs
    decode); float pixels (``F``) must lie in 0..1 and are scaled by 255. Anything else is refused
    with a :class:`ImageDecodeError` naming ``where``, never clipped into a different picture.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_INT_MODES or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if image.mode == "F":
            if not (np.isfinite(pixels).all() and low >= 0.0 and high <= 1.0):
                raise ImageDecodeError(f"{where}: float pixels must hold values from 0 to 1, "
                                       f"found {low:g} to {high:g}; convert it to 8 bits first")
            scale = 255.0
        else:
            if low < 0 or high > 65535:
                raise ImageDecodeError(f"{where}: {image.mode} pixels from {low:g} to {high:g} do not fit 16 bits; "
                                       "convert it to 8 bits first")
            scale = 255.0 / 65535.0
        grey = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    return image.convert("RGB")


def read_image(path: str) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image (:func:`to_rgb`).

    ``Image.open`` is lazy, so truncated JPEGs would only fail later inside a worker with an
    unhelpful trace; converting forces the decode here, where we can name the file.
    """
    try:
        with _open(path) as image:
            image.load()
            return to_rgb(image, path)
    except ImageDecodeError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded, or ``None`` if it decodes completely.

    ``Image.verify`` misses truncated JPEGs, so this decodes every pixel; the images of re-ID
    benchmarks are small (128x64 for Market), so a full pass stays in seconds.
    """
    try:
        with _open(path) as image:
            image.load()
            to_rgb(image, path)  # a mode that cannot become 8-bit RGB is unreadable for training too
    except ImageDecodeError as exc:
        return str(exc).split(": ", 1)[-1]
    except _DECODE_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


def find_unreadable(paths: Iterable[str], workers: int = 4) -> list[tuple[str, str]]:
    """``(path, reason)`` for every path that does not decode, in the input order.

    Threads suffice: PIL releases the GIL while decoding.
    """
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(image_problem, paths, chunksize=64))
    return [(p, why) for p, why in zip(paths, problems) if why is not None]


#: What the extraction API takes as one image: a file path, a PIL image or an ``HxWx3`` array.
ImageLike = Union[str, Path, Image.Image, np.ndarray]


def to_pil(item: ImageLike) -> Image.Image:
    """A path, a PIL image or an ``HxWx3`` uint8 RGB array (``HxW`` grey is widened) as an RGB image."""
    if isinstance(item, (str, Path)):
        return read_image(str(item))
    if isinstance(item, Image.Image):
        if 0 in item.size:
            raise BpmError(f"image: expected at least 1x1 pixels, got {item.size[0]}x{item.size[1]}")
        return to_rgb(item)  # 16-bit and float pixels scaled to 8 bits, not clipped
    if isinstance(item, np.ndarray):
        array = item
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3:
            raise BpmError(f"image array: expected HxWx3 RGB, got shape {item.shape}")
        if 0 in array.shape[:2]:
            raise BpmError(f"image array: expected at least 1x1 pixels, got shape {item.shape}")
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
                raise BpmError(f"image array: expected uint8 0..255 or float 0..1, got {array.dtype}")
            array = np.round(array * 255).astype(np.uint8)
        return Image.fromarray(array, "RGB")
    raise BpmError(f"image: expected a path, a PIL image or a numpy array, got {type(item).__name__}")
