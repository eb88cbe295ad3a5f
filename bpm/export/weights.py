"""Reading any supported weights file into a model, and writing weights files at a precision.

Written files are plain ``base.*`` state_dicts, the layout of the original's released weights,
so both projects (and ``torch.load(weights_only=True)``) can read them.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import torch

from bpm.config import is_unset
from bpm.errors import BpmError
from bpm.models.meta import attach_to_state, choose, stored_meta
from bpm.models.reid import ReidModel, build_model, build_model_for_state, inference_state
from bpm.models.weights import (
    StateDict, detect_net, extract_model_state, load_imagenet_weights, load_model_weights_from_state,
    read_weights_file,
)
from bpm.precision import PrecisionPolicy


def load_source_model(path: str | Path, net: str | None = None,
                      last_conv_stride: int | None = None) -> tuple[ReidModel, str]:
    """A FP32 eval-mode model from a checkpoint, a weights file (ours or the original's), a torchvision
    ImageNet file, the original's ``mobilenet_v2.pth.tar`` or a safetensors file; and what the file was.

    ``net`` and ``last_conv_stride`` may be left out (``None`` or :func:`bpm.config.unset`) when the
    file tells: our files store them (:mod:`bpm.models.meta`), and key names distinguish the two
    networks; a given value that differs from the file's is used, with a warning.
    """
    raw = read_weights_file(path)
    meta = stored_meta(raw, path)
    if is_unset(net):
        net = None
    if net is None and isinstance(raw, Mapping) and isinstance(raw.get("net"), str):
        net = raw["net"]
    state = extract_model_state(raw, path)
    net = choose("net", net, meta, path) if "net" in meta else (net or detect_net(state))
    if net is None:
        from bpm.models.registry import BACKBONES

        raise BpmError(f"{path}: cannot tell the network from its keys; pass --net ({', '.join(BACKBONES)})")
    last_conv_stride = choose("last_conv_stride", last_conv_stride, meta, path)
    if any(k.startswith(("fc.", "classifier.")) for k in state):
        model = build_model(net, last_conv_stride)
        load_imagenet_weights(model, path)
        kind = "ImageNet classifier weights (backbone only)"
    else:
        # Pooling and neck as trained; the training-only ID head (head.*) is never exported.
        model = build_model_for_state(net, last_conv_stride, state)
        load_model_weights_from_state(model, inference_state(state), path)
        kind = "training checkpoint" if isinstance(raw, Mapping) and "state_dicts" in raw else "re-ID weights"
    model.input_meta = meta  # what the file says about its input; {} for older files (bpm.models.meta)
    return model.float().eval(), kind


def weights_state(model: torch.nn.Module, opt_level: str = "O0", keep_batchnorm_fp32: bool = True) -> StateDict:
    """The model's state_dict cast as ``opt_level`` casts weights: FP32 for O0/O1, FP16 for O2/O3
    (BatchNorm kept FP32 when ``keep_batchnorm_fp32``, as in the original's released 16-bit models).
    """
    policy = PrecisionPolicy.create(opt_level, "cpu", "float16", keep_batchnorm_fp32)
    cast = policy.prepare_model(copy.deepcopy(model).cpu())
    return {k: v.detach().clone().contiguous() for k, v in cast.state_dict().items()}


def state_precision(state: Mapping[str, torch.Tensor]) -> str:
    return "fp16" if any(v.dtype == torch.float16 for v in state.values()) else "fp32"


def save_pt(state: StateDict, path: str | Path, meta: Mapping | None = None) -> Path:
    """A plain state_dict file; ``meta`` (input settings) rides in its ``_metadata`` (bpm.models.meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(attach_to_state(state, meta) if meta else state, path)
    return path


def save_safetensors(state: StateDict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Safetensors cannot execute code on load, the safest format to hand to other tools."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path
