"""Running exported graphs with ONNX Runtime, and turning images into the arrays they take.

One pixel pipeline serves calibration, verification, benchmarks and :class:`bpm.FeatureExtractor`,
so every format is measured on exactly the input it will see in deployment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image

from bpm.data.images import read_image, to_rgb
from bpm.data.transforms import model_input
from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, read_spec
from bpm.models.input_spec import InputSpec, as_input_spec

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


def image_batch(items: Iterable[ImageLike], spec: InputSpec | tuple[int, int]) -> np.ndarray:
    """``[N, 3, H, W]`` float32 of :func:`bpm.data.transforms.model_input` under the model's input spec."""
    spec = as_input_spec(spec)
    arrays = [model_input(to_pil(item), spec) for item in items]
    if not arrays:
        return np.zeros((0, 3, *spec.resize_h_w), dtype=np.float32)
    return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)


def session_options(threads: int = 0, spin: bool = False):
    """Full graph optimisation, one inter-op thread, ``threads`` intra-op threads (0: ORT's default).

    Intra-op threads do not spin between runs (``spin`` restores ORT's default, for comparisons).
    Spinning keeps the cores busy after each call, so whatever runs next on them (JPEG decoding
    and resizing of the next batch in :class:`bpm.FeatureExtractor`, another session, the
    application itself) gets them late.
    bench/infer_speed.py measured what it costs on 2 cores: with two sessions alternating,
    MobileNet-V2 INT8 at batch 32 fell from ~1200-1400 to ~680 img/s, while one session alone
    gained nothing measurable from spinning (FP32 574 vs 568 img/s, batch 1 no faster either).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


class OnnxModel:
    """An ONNX Runtime CPU session over an exported graph, called like the PyTorch model.

    Input arrays are always FP32; FP16 graphs carry their own casts (see ``convert_to_fp16``).
    ``precision`` is the graph's (its metadata's); ``metadata`` its ``bpm.*`` metadata.
    """

    kind = "ONNX graph"

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BpmError(f"{self.path}: ONNX file not found")
        self.spec: OnnxSpec = read_spec(self.path)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise BpmError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from exc
        self.precision = self.spec.precision
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.feature_dim = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        output = self.session.run(None, {self.spec.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return np.asarray(output, dtype=np.float32).reshape(len(images), -1)
