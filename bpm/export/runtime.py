"""Features of images by an exported graph, through the one extraction path; and how fast one graph runs
against another on this CPU.

Graphs are loaded and run by :mod:`bpm.models.onnx_graph`; the arrays they take come from
:func:`bpm.data.transforms.image_batch`, the one pixel pipeline of calibration, verification,
benchmarks and :class:`bpm.FeatureExtractor`, so every format is measured on exactly the input it
will see in deployment.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bpm.data.images import ImageLike
from bpm.evaluation.features import embed_images
from bpm.models.onnx_graph import GraphModule, OnnxModel
from bpm.precision import PrecisionPolicy


def onnx_features(runner: OnnxModel, items: Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
    """Features of images by an exported graph's runner (ONNX or OpenVINO; its metadata gives input
    size and pixel scale), through the one extraction path: what ``bpm export`` verifies is what ``FeatureExtractor`` computes."""
    return embed_images(GraphModule(runner), items, PrecisionPolicy.create("O0"), runner.spec.input_spec, batch_size)


def speed_ratio(baseline: Path, candidate: Path, threads: int = 0, batch: int = 32, rounds: int = 5) -> float:
    """``candidate``'s images/s over ``baseline``'s under ONNX Runtime on this CPU, at batch ``batch``
    and the graphs' input size: the two timed in turn (round-robin, so load from other processes falls
    on both alike), median of ``rounds``. A few seconds at most for an edge model; it tells a user
    whether a file is worth its accuracy cost here, which no check of features can."""
    runners = [OnnxModel(path, threads) for path in (baseline, candidate)]
    height, width = runners[0].spec.input_spec.resize_h_w
    images = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
    for runner in runners:
        runner(images)  # warm-up: first calls plan and allocate
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for runner, spent in zip(runners, times):
            start = time.perf_counter()
            runner(images)
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])
