"""An OpenVINO IR (``.xml`` + ``.bin``) as a model: one runner, :class:`OpenVinoModel`, for every
IR (ours, FP32 or INT8, and teachers from elsewhere).

Why in ``bpm.models``: :func:`bpm.load_model`, the one loader, reads IRs as it reads ONNX files.
OpenVINO runs an FP32 IR at the CPU's default inference precision (bfloat16 where the CPU has AMX,
FP32 elsewhere), so the precision a file *runs* at is a property of the machine: the runner reads it
back from the compiled model (``INFERENCE_PRECISION_HINT``) and reports it. The model's input spec
rides in the IR's ``rt_info`` under ``bpm`` (the keys of an exported ONNX file's metadata, without the
``bpm.`` prefix). ``openvino`` is optional (``pip install 'bpm[openvino]'``); without it every use is
a one-line error. Writing IRs is :mod:`bpm.export.openvino`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bpm.errors import BpmError, one_line
from bpm.machine import isa_cap
from bpm.models.backends import EXTRACTION_BACKENDS, ExtractionBackend
from bpm.models.onnx_graph import OnnxSpec, spec_from_metadata

IR_SUFFIX = ".xml"
INSTALL_HINT = "pip install 'bpm[openvino]'"
META_PREFIX = "bpm."
#: rt_info key of an IR pinned to one inference precision (``fp32``): ``bpm export`` writes it when the
#: CPU's default (bf16 wherever the CPU has bf16 instructions) fails the check, so every later run of
#: the file computes as it was verified.
PRECISION_KEY = META_PREFIX + "inference_precision"
#: OpenVINO element types of INFERENCE_PRECISION_HINT, by our precision names (bpm.export.verify).
PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
#: Batch sizes a model compiles a fixed-shape copy for, by default. OpenVINO's CPU plugin picks its
#: kernels and memory plan for a known shape: MobileNet-V2 INT8 at batch 32 ran a median 2 % faster
#: compiled for [32, 3, H, W] than for a dynamic batch (14 paired timings, -3 to +25 %; 2-core AVX-512
#: EPYC). Each new size costs one compile (about 0.3 s), so a caller whose batch size changes at every
#: call (the stream pipeline's crops per frame) stops adding copies after this many and runs the rest
#: on the dynamic-batch model.
FIXED_BATCHES = 4
#: oneDNN instruction-set caps (:data:`bpm.machine.ISA_CAP_VARIABLE`) that leave no bf16 arithmetic.
NO_BF16_CAPS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"})
#: Caps that leave no VNNI dot product: INT8 kernels then add u8 x s8 pairs in saturating int16.
NO_VNNI_CAPS = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE"})


def capped_precision(cap: str | None) -> str | None:
    """``fp32`` where the oneDNN cap leaves no bf16 kernels, else None (the CPU's default).

    Why: the cap makes a newer CPU compute what an older one would, e.g. an AVX2-only CPU's INT8
    speed and saturation on an AVX-512 one. OpenVINO still reads bf16 support from the CPU itself,
    picks bf16, and then fails at the first inference of any layer left in floating point ("node ...
    is not initialized"). A CPU without bf16 runs FP32, so a run under the cap does too.
    """
    return "fp32" if cap in NO_BF16_CAPS else None


def require(package: str, what: str):
    """``import package`` (``openvino`` or ``nncf``), or a one-line error saying how to install it."""
    try:
        return __import__(package)
    except ImportError:
        raise BpmError(f"{what} needs the {package} package, which is not installed ({INSTALL_HINT})") from None


def read_metadata(model) -> dict[str, str]:
    """The ``bpm.*`` metadata of an OpenVINO model (``{}`` for an IR from elsewhere)."""
    if not model.has_rt_info(["bpm"]):
        return {}
    return {META_PREFIX + key: model.get_rt_info(["bpm", key]).astype(str) for key in model.get_rt_info()["bpm"]}


def openvino_int8_saturates(cpu_saturates: bool, cap: str | None) -> bool:
    """Whether OpenVINO's INT8 kernels saturate here: on a CPU without VNNI (``cpu_saturates``, from
    :func:`bpm.models.onnx_graph.this_cpu_saturates`), or under a oneDNN cap without it. ONNX Runtime
    ignores the cap, so under one the two runtimes can differ on the same CPU."""
    return cpu_saturates or cap in NO_VNNI_CAPS


class OpenVinoModel:
    """An IR compiled for the CPU, called like :class:`bpm.models.onnx_graph.OnnxModel` (FP32 arrays in and out).

    Args:
        path: the ``.xml`` (its ``.bin`` beside it), or an ONNX file, which OpenVINO reads directly.
        threads: inference threads (0: OpenVINO's default).
        inference_precision: ``fp32``/``bf16``/``fp16`` to force one; ``None``: the one the IR is pinned
            to (:data:`PRECISION_KEY`), else the CPU's default (FP32 under a oneDNN cap without bf16:
            :func:`capped_precision`).
        streams: above 1, a batch is split into this many parts that run at once, each on its own
            share of the threads (OpenVINO's throughput mode). Depthwise and small layers keep few
            threads busy, so on a small CPU two one-thread streams serve a batch faster than one
            two-thread stream; a batch of one, or an IR with a fixed batch size, runs whole on one stream.
        fixed_batches: how many batch sizes get a copy compiled for their fixed shape, on first use
            (:data:`FIXED_BATCHES`; 0: every batch runs on the dynamic-batch model, as OpenVINO reads
            the IR). Throughput mode always runs the dynamic-batch model.

    ``inference_precision`` is what the compiled model reports it computes in; ``precision`` is what
    the file is checked as (``int8`` for a quantised IR, else the inference precision). ``spec`` is
    ``None`` for an IR from elsewhere without fixed height and width.
    """

    kind = "OpenVINO IR"

    def __init__(self, path: str | Path, threads: int = 0, inference_precision: str | None = None,
                 streams: int = 1, fixed_batches: int = FIXED_BATCHES) -> None:
        openvino = require("openvino", f"{path} (OpenVINO IR)")
        self.path = Path(path)
        if not self.path.is_file():
            raise BpmError(f"{self.path}: OpenVINO IR not found")
        if self.path.suffix != ".onnx" and not self.path.with_suffix(".bin").is_file():
            raise BpmError(f"{self.path}: the IR's weights {self.path.with_suffix('.bin').name} are missing beside it")
        try:
            core = openvino.Core()
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError/GeneralFailure variants
            raise BpmError(f"{self.path}: OpenVINO cannot load it ({one_line(exc)})") from exc
        self.metadata = read_metadata(model)
        inference_precision = inference_precision or self.metadata.get(PRECISION_KEY) or capped_precision(isa_cap())
        config: dict = {}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if inference_precision:
            wanted = {v: k for k, v in PRECISIONS.items()}.get(inference_precision)
            if wanted is None:
                raise BpmError(f"inference precision {inference_precision!r}: expected one of "
                               f"{', '.join(PRECISIONS.values())}")
            config["INFERENCE_PRECISION_HINT"] = wanted
        if streams > 1:
            config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": int(streams)})
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BpmError(f"{self.path}: OpenVINO cannot load it ({one_line(exc)})") from exc
        self._core, self._model, self._config = core, model, config
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.inference_precision = PRECISIONS.get(hint, hint)
        self.spec = self._spec(model)
        self.precision = "int8" if self.spec is not None and self.spec.precision == "int8" else self.inference_precision
        self._output = self.compiled.output(0)
        shape = self._output.get_partial_shape()
        self.feature_dim = int(shape[shape.rank.get_length() - 1].get_length())
        dims = model.input(0).get_partial_shape()
        self.streams = int(streams) if streams > 1 and dims[0].is_dynamic else 1
        # only where the batch is the one free dimension, and not in throughput mode
        reshapable = self.streams == 1 and dims[0].is_dynamic and all(dims[i].is_static for i in range(1, len(dims)))
        self._fixed_batches = int(fixed_batches) if reshapable else 0
        self._by_batch: dict[int, object] = {}
        self._parts: list[np.ndarray] = []
        self._queue = openvino.AsyncInferQueue(self.compiled, self.streams) if self.streams > 1 else None
        if self._queue is not None:
            self._queue.set_callback(self._keep_part)

    def _keep_part(self, request, index: int) -> None:
        self._parts[index] = np.array(request.get_tensor(self._output).data, dtype=np.float32)

    def _spec(self, model) -> OnnxSpec | None:
        dims = model.input(0).get_partial_shape()
        fixed = dims.rank.is_static and dims.rank.get_length() == 4 and dims[2].is_static and dims[3].is_static
        if not self.metadata and not fixed:
            return None
        h_w = (dims[2].get_length(), dims[3].get_length()) if fixed else (0, 0)
        return spec_from_metadata(self.metadata, model.input(0).get_any_name(), model.output(0).get_any_name(), h_w)

    def _compiled_for(self, batch: int):
        """The copy compiled for this batch size (made on first use, up to ``fixed_batches`` sizes), else
        the dynamic-batch model."""
        compiled = self._by_batch.get(batch)
        if compiled is None and batch > 0 and len(self._by_batch) < self._fixed_batches:
            model = self._model.clone()
            shape = model.input(0).get_partial_shape()
            shape[0] = batch
            try:
                model.reshape({model.input(0): shape})
                compiled = self._by_batch[batch] = self._core.compile_model(model, "CPU", self._config)
            except Exception:  # an IR from elsewhere whose graph cannot take a fixed batch: the free batch, always
                self._fixed_batches = 0
        return compiled or self.compiled

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self._queue is None or len(images) < 2:
            compiled = self._compiled_for(len(images))
            output = compiled(images)[compiled.output(0)]
            return np.asarray(output, dtype=np.float32).reshape(len(images), -1)
        parts = np.array_split(images, min(self.streams, len(images)))
        self._parts = [np.empty(0, np.float32)] * len(parts)
        for index, part in enumerate(parts):
            self._queue.start_async({0: part}, index)
        self._queue.wait_all()
        return np.concatenate(self._parts).reshape(len(images), -1)


EXTRACTION_BACKENDS.add("openvino", ExtractionBackend(
    "openvino", (IR_SUFFIX,), f"an OpenVINO IR .xml (bpm export --formats openvino; {INSTALL_HINT})", OpenVinoModel,
    streams=True),
    module=__name__)
