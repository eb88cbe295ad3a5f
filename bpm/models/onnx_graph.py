"""An exported ONNX graph as a model: its metadata (:class:`OnnxSpec`), an ONNX Runtime session
(:class:`OnnxModel`) and a module around any graph runner (:class:`GraphModule`).

Why in ``bpm.models``: :func:`bpm.load_model`, the one loader, reads ``.onnx`` files too, so that an
exported graph takes the same extraction path as a PyTorch model. Writing graphs (export, FP16,
INT8) stays in :mod:`bpm.export`, which builds on this.
"""
from __future__ import annotations

import functools
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bpm.errors import BpmError, one_line
from bpm.models.backends import EXTRACTION_BACKENDS, ExtractionBackend
from bpm.models.input_spec import InputSpec
from bpm.models.necks import normalizes_at_test
from bpm.models.registry import backbone_choices, get_backbone


@dataclass(frozen=True)
class OnnxSpec:
    """What an exported graph expects and returns; written into (and read back from) its metadata."""

    net: str
    resize_h_w: tuple[int, int]
    input_name: str = "images"
    output_name: str = "features"
    bake_normalization: bool = False
    precision: str = "fp32"
    input_meta: str = ""  # JSON of the source's InputSpec and recipe (bpm.models.meta.file_meta)

    @property
    def input_spec(self) -> InputSpec:
        """The :class:`InputSpec` of the graph: the source model's (its JSON record), with this graph's
        size and pixel range. Graphs without a record (older exports, other tools) get the backbone's
        normalisation when the network is known, else the ResNet-50/MobileNet-V2 default."""
        record = json.loads(self.input_meta) if self.input_meta else {}
        known = set(InputSpec.__dataclass_fields__) - {"net", "resize_h_w", "raw_pixels"}
        values = {k: v for k, v in record.items() if k in known and v is not None}
        if self.net in backbone_choices():
            backbone = get_backbone(self.net)
            values = {"mean": backbone.mean, "std": backbone.std, "feature_dim": backbone.feature_dim, **values}
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        values.setdefault("normalize_features", normalizes_at_test(str(values.get("neck", "none"))))
        return InputSpec(net=self.net if self.net != "unknown" else "", resize_h_w=tuple(self.resize_h_w),
                         raw_pixels=self.bake_normalization, **values)

    def metadata(self) -> dict[str, str]:
        return {**({"bpm.input_meta": self.input_meta} if self.input_meta else {}),
            "bpm.net": self.net,
            "bpm.resize_h_w": f"{self.resize_h_w[0]},{self.resize_h_w[1]}",
            "bpm.bake_normalization": str(self.bake_normalization).lower(),
            "bpm.precision": self.precision,
            "bpm.input": self.input_spec.describe_pixels(),
        }


def read_spec(path: str | Path) -> OnnxSpec:
    """The :class:`OnnxSpec` of an exported file; graphs from elsewhere get one derived from their input."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/OSError variants depending on the damage
        raise BpmError(f"{path}: not a readable ONNX file ({exc})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    graph_input = proto.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[2].dim_value or not dims[3].dim_value:
        raise BpmError(f"{path}: expected an image input [N, 3, H, W] with fixed H and W")
    return spec_from_metadata(meta, graph_input.name, proto.graph.output[0].name, (dims[2].dim_value, dims[3].dim_value))


def spec_from_metadata(meta: dict[str, str], input_name: str, output_name: str,
                       input_h_w: tuple[int, int]) -> OnnxSpec:
    """The :class:`OnnxSpec` that ``bpm.*`` metadata (:meth:`OnnxSpec.metadata`) describes; a graph
    without it is described by its input's fixed size. Shared by ONNX files and OpenVINO IRs."""
    h_w = tuple(int(v) for v in meta["bpm.resize_h_w"].split(",")) if "bpm.resize_h_w" in meta else input_h_w
    return OnnxSpec(
        net=meta.get("bpm.net", "unknown"),
        resize_h_w=(h_w[0], h_w[1]),
        input_name=input_name,
        output_name=output_name,
        bake_normalization=meta.get("bpm.bake_normalization") == "true",
        precision=meta.get("bpm.precision", "fp32"),
        input_meta=meta.get("bpm.input_meta", ""),
    )


#: ONNX Runtime's session setting that keeps INT8 products exact on x86 CPUs without VNNI.
PRECISE_INT8_SETTING = "session.x64quantprecision"
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def int8_saturates(isa: Sequence[str], arch: str) -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels lose precision on a CPU with these ISA flags.

    Without a VNNI dot product (AVX2, AVX-512 without VNNI: the AMD EPYCs seen with AVX2 only), x86
    kernels multiply with VPMADDUBSW, which adds each pair of u8 x s8 products in 16 bits *with
    saturation*. Rare as it is (about 2 pair sums in 10,000 on the CUHK03 models), it hits the stem
    and the narrow expansions hard: bench/avx2_saturation.py, emulating it exactly, measured mean
    cosine 0.87 to the exact INT8 embedding and 4.6 mAP points lost on the softmax MobileNet-V2.
    VNNI (VPDPBUSD) accumulates in 32 bits; other architectures do not use this instruction.
    """
    return arch.lower() in _X86 and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(isa)


@functools.cache
def this_cpu_saturates() -> bool:
    from bpm.machine import parse_cpuinfo

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            isa = parse_cpuinfo(handle.read())[1]
    except OSError:
        isa = []  # unknown: the exact kernels, correct everywhere
    return int8_saturates(isa, platform.machine())


#: Largest |INT8 weight| for which no u8 x s8 pair sum can leave int16: 2 * 255 * 64 = 32,640 <= 32,767.
SEVEN_BIT_WEIGHT = 64


def cannot_saturate(proto) -> bool:
    """Whether an ONNX graph's INT8 tensors all fit :data:`SEVEN_BIT_WEIGHT` (``bpm export
    --int8_weight_bits 7``, ONNX Runtime's ``reduce_range``): its u8 x s8 kernels then compute the
    exact integers on every CPU, so the slower ``session.x64quantprecision`` is not needed.
    A graph with no INT8 tensor is trivially safe."""
    import onnx
    from onnx import numpy_helper

    return all(np.abs(numpy_helper.to_array(t).astype(np.int16)).max(initial=0) <= SEVEN_BIT_WEIGHT
               for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8)


def session_options(threads: int = 0, spin: bool = False, precise_int8: bool | None = None):
    """Full graph optimisation, one inter-op thread, ``threads`` intra-op threads (0: ORT's default).

    ``precise_int8`` (default: where :func:`int8_saturates` says this CPU needs it) sets ONNX Runtime's
    ``session.x64quantprecision``: INT8 weights go through u8 x u8 kernels, which do not saturate, so
    an INT8 file computes the same integers as on the VNNI CPU that verified it. On VNNI CPUs it stays
    off (the u8 x s8 VNNI kernels are exact and the fastest).

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
    if this_cpu_saturates() if precise_int8 is None else precise_int8:
        options.add_session_config_entry(PRECISE_INT8_SETTING, "1")
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def session_options_for(path: str | Path, threads: int = 0, spin: bool = False):
    """:func:`session_options` for one INT8 (or any) file: the exact kernels only where this CPU
    would saturate *and* the file's weights could (:func:`cannot_saturate`)."""
    import onnx

    precise = this_cpu_saturates() and not cannot_saturate(onnx.load(str(path)))
    return session_options(threads, spin, precise_int8=precise)


class OnnxModel:
    """An ONNX Runtime CPU session over an exported graph, called like the PyTorch model.

    Input arrays are always FP32; FP16 graphs carry their own casts (see ``convert_to_fp16``).
    ``precision`` is the graph's (its metadata's); ``metadata`` its ``bpm.*`` metadata.
    """

    kind = "ONNX graph"

    def __init__(self, path: str | Path, threads: int = 0, precise_int8: bool | None = None) -> None:
        """``precise_int8``: see :func:`session_options` (None: where this CPU needs it and the file's
        weights could saturate, :func:`cannot_saturate`)."""
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BpmError(f"{self.path}: ONNX file not found")
        self.spec: OnnxSpec = read_spec(self.path)
        options = session_options(threads, precise_int8=precise_int8) if precise_int8 is not None \
            else session_options_for(self.path, threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise BpmError(f"{self.path}: ONNX Runtime cannot load it ({one_line(exc)})") from exc
        self.precision = self.spec.precision
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.feature_dim = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        output = self.session.run(None, {self.spec.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return np.asarray(output, dtype=np.float32).reshape(len(images), -1)


class GraphModule(torch.nn.Module):
    """A graph runtime's model (ONNX Runtime, OpenVINO) as a module, so exported files take the one
    extraction path of torch models."""

    def __init__(self, runner: "OnnxModel") -> None:
        super().__init__()
        self.runner = runner
        self.feature_dim = runner.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(images.cpu().numpy()))


EXTRACTION_BACKENDS.add("onnx", ExtractionBackend("onnx", (".onnx",), "an exported .onnx file (see bpm export)",
                                                  OnnxModel), module=__name__)
