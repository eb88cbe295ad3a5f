"""Writing weights files at a precision (reading any of them is :func:`bpm.load_model`).

Written files are plain ``base.*`` state_dicts, the layout of the original's released weights,
so both projects (and ``torch.load(weights_only=True)``) can read them.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import torch

from bpm.models.meta import attach_to_state
from bpm.models.registry import StateDict
from bpm.precision import PrecisionPolicy


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
