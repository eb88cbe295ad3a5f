"""Running exported graphs with ONNX Runtime.

The arrays they take come from :func:`bpm.data.transforms.image_batch`, the one pixel pipeline of
calibration, verification, benchmarks and :class:`bpm.FeatureExtractor`, so every format is
measured on exactly the input it will see in deployment.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bpm.errors import BpmError
from bpm.export.onnx import OnnxSpec, read_spec


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
    """

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

    def __call__(self, images: np.ndarray) -> np.ndarray:
        output = self.session.run(None, {self.spec.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return np.asarray(output, dtype=np.float32).reshape(len(images), -1)
