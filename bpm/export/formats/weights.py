"""Weights files: ``pt`` (precision of ``--opt-level``), ``pt16`` and ``safetensors``.

Checked by reloading through :func:`bpm.load_model` and embedding with PyTorch, as ``bpm test``
would run them (cosine only: their arithmetic is PyTorch's, which the reference already scores).
"""
from __future__ import annotations

from pathlib import Path

from bpm.export.formats import ExportContext, Opened, export_format
from bpm.export.pipeline import reference_features
from bpm.export.weights import save_pt, save_safetensors, state_precision, weights_state
from bpm.models.loading import load_model
from bpm.models.meta import safetensors_metadata
from bpm.models.weights import extract_model_state, read_weights_file


def open_weights(ctx: ExportContext, path: Path) -> Opened:
    """Reloaded by the one loader and run by PyTorch; its precision is that of its tensors."""
    model, _spec = load_model(path, net=ctx.model.net, last_conv_stride=ctx.opts.input_spec.last_conv_stride)
    precision = state_precision(extract_model_state(read_weights_file(path), path))
    return Opened(precision, lambda paths: reference_features(model, paths, ctx.opts))


def _save_pt(ctx: ExportContext, path: Path, opt_level: str) -> None:
    save_pt(weights_state(ctx.model, opt_level, ctx.opts.precision.keep_batchnorm_fp32), path, ctx.meta)


@export_format("pt", "{stem}_{weights_precision}.pt", opens=open_weights, retrieval=False,
               help="PyTorch state_dict at the precision of --opt-level (O2/O3: FP16)")
def write_pt(ctx: ExportContext, path: Path) -> None:
    _save_pt(ctx, path, ctx.opts.precision.opt_level)


@export_format("pt16", "{stem}_fp16.pt", opens=open_weights, retrieval=False,
               help="PyTorch state_dict in FP16 (BatchNorm FP32 with --keep-batchnorm-fp32)")
def write_pt16(ctx: ExportContext, path: Path) -> None:
    _save_pt(ctx, path, "O2")


@export_format("safetensors", "{stem}_fp32.safetensors", opens=open_weights, retrieval=False,
               help="FP32 safetensors (cannot run code on load)")
def write_safetensors(ctx: ExportContext, path: Path) -> None:
    save_safetensors(weights_state(ctx.model, "O0", ctx.opts.precision.keep_batchnorm_fp32), path,
                     {"net": ctx.model.net, "format": "bpm re-ID weights (base.* keys)",
                      **safetensors_metadata(ctx.meta)})
