"""The runtimes a model file can run on (``bpm extract --backend``, :class:`bpm.FeatureExtractor`),
one registered :class:`ExtractionBackend` each.

Why here, in ``bpm.models``: the runners (ONNX Runtime in :mod:`bpm.models.onnx_graph`, OpenVINO in
:mod:`bpm.models.openvino_graph`) live beside the one loader that opens their files, and each
registers itself where it is defined; a new runtime is one new module plus its test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bpm.registry import Registry


@dataclass(frozen=True)
class ExtractionBackend:
    """A runtime :class:`bpm.FeatureExtractor` can run a model file on (``--backend`` of ``bpm extract``).

    Args:
        name: the ``--backend`` value.
        suffixes: the file suffixes it runs, chosen by default for them; ``()``: every file no other
            backend claims (PyTorch weights).
        needs: what file it needs, for the error when given another (``"an exported .onnx file"``).
        runner: for a graph runtime, ``(path, threads) -> runner`` (called like the model on FP32
            arrays, with ``spec``, ``precision``, ``metadata``, ``feature_dim``, ``kind``); ``None``
            for PyTorch. A graph has its precision built in (``--opt-level`` O0 only) and runs on the CPU.
        streams: the runner also takes ``streams=N`` (a batch split into N parts run at once; ``--streams``).
    """

    name: str
    suffixes: tuple[str, ...]
    needs: str
    runner: Callable[..., object] | None = None
    streams: bool = False


EXTRACTION_BACKENDS: Registry[ExtractionBackend] = Registry(
    "extraction backend", flag="--backend", package=("bpm.models.onnx_graph", "bpm.models.openvino_graph"))
EXTRACTION_BACKENDS.add("torch", ExtractionBackend("torch", (), "PyTorch weights (a checkpoint, .pt or .safetensors)"),
                        module=__name__)


def backend_for_file(path: str | Path) -> ExtractionBackend:
    """The backend that runs ``path`` by default: the one claiming its suffix, else PyTorch's."""
    suffix = Path(path).suffix.lower()
    backends = [EXTRACTION_BACKENDS.get(name) for name in EXTRACTION_BACKENDS.names()]
    claimed = [b for b in backends if suffix in b.suffixes]
    return claimed[0] if claimed else next(b for b in backends if not b.suffixes)
