"""Which activations INT8 hurts: quantise one at a time (simulated in PyTorch) and measure the output.

ONNX Runtime quantises each activation tensor to 256 levels over one range per tensor. Simulating
that rounding on a single layer's output, with every other layer exact, isolates how much of the
INT8 error each layer causes on its own, without the noise of every other layer on top. This is
how the first convolution of a CUHK03-trained MobileNet-V2 was found to cost 0.07 of cosine alone
(see :mod:`bpm.export.equalize`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

#: Modules whose outputs ONNX Runtime stores as 8-bit activations in the exported graph (a block's
#: output covers its residual addition).
_POINT_TYPES = (nn.ReLU, nn.ReLU6, nn.BatchNorm2d)


@dataclass(frozen=True)
class Sensitivity:
    point: str
    low: float
    high: float
    #: Mean cosine between the model's output with only this point rounded to 8 bits and the exact output.
    cosine: float


def fake_quantize(x: torch.Tensor, low: float, high: float, levels: int = 256) -> torch.Tensor:
    """Asymmetric ``levels``-step rounding over ``[low, high]`` (widened to contain 0), as ONNX Runtime does."""
    low, high = min(low, 0.0), max(high, 0.0)
    step = (high - low) / (levels - 1) or 1e-12
    zero = round(-low / step)
    return (torch.clamp(torch.round(x / step) + zero, 0, levels - 1) - zero) * step


def _activated_batchnorms(trunk: nn.Module) -> set[str]:
    """BatchNorms whose output goes straight into a ReLU/ReLU6: ORT fuses those, nothing is rounded there."""
    modules = dict(trunk.named_modules())
    activated = set()
    for node in fx.symbolic_trace(trunk).graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d) and len(node.users) == 1:
            user = next(iter(node.users))
            if user.op == "call_module" and isinstance(modules[user.target], (nn.ReLU, nn.ReLU6)):
                activated.add(node.target)
    return activated


def activation_points(model: nn.Module) -> dict[str, nn.Module]:
    """Activations ORT stores in 8 bits: ReLU/ReLU6 outputs, BatchNorm outputs that no activation
    follows, and every block's output (residual sums) of the model's trunk; then the pooled feature."""
    trunk = getattr(model, "base", model)
    skip = _activated_batchnorms(trunk)
    points = {f"base.{name}": module for name, module in trunk.named_modules()
              if isinstance(module, _POINT_TYPES) and name not in skip}
    for parent_name, parent in trunk.named_modules():
        if isinstance(parent, nn.Sequential):
            for child_name, child in parent.named_children():
                if any(True for _ in child.children()):  # a block: its output may be a residual sum
                    points[f"base.{parent_name}.{child_name}".replace("base..", "base.")] = child
    if isinstance(getattr(model, "pool", None), nn.Module):
        points["pool"] = model.pool
    return points


@torch.inference_mode()
def activation_sensitivity(model: nn.Module, calibration: torch.Tensor, check: torch.Tensor) -> list[Sensitivity]:
    """Every activation point, most harmful first. Ranges come from ``calibration`` (MinMax, as ORT)."""
    model.eval()
    points = activation_points(model)
    ranges: dict[str, tuple[float, float]] = {}
    storage: dict[str, int] = {}

    def recorder(name: str):
        def hook(_module, _inputs, output):
            storage[name] = output.data_ptr()
            low, high = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(low, float(output.min())), max(high, float(output.max())))
        return hook

    hooks = [module.register_forward_hook(recorder(name)) for name, module in points.items()]
    try:
        model(calibration)
    finally:
        for hook in hooks:
            hook.remove()
    # A block without a residual sum returns its last layer's tensor: measure that tensor once.
    by_storage: dict[int, str] = {}
    for name in sorted(points, key=len, reverse=True):
        by_storage.setdefault(storage[name], name)
    points = {name: module for name, module in points.items() if by_storage[storage[name]] == name}
    reference = model(check).float()
    rows = []
    for name, module in points.items():
        low, high = ranges[name]
        hook = module.register_forward_hook(lambda _m, _i, output, lo=low, hi=high: fake_quantize(output, lo, hi))
        try:
            output = model(check).float()
        finally:
            hook.remove()
        cosine = float(nn.functional.cosine_similarity(output, reference, dim=1).mean())
        rows.append(Sensitivity(name, low, high, cosine))
    return sorted(rows, key=lambda row: row.cosine)
