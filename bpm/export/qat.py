"""Quantisation-aware fine-tuning: teach the network to give the same embedding through 8-bit rounding.

Post-training INT8 (even range-equalised) leaves a real re-ID network several mAP points short:
the rounding of ~70 activations accumulates. Here the trunk is fine-tuned for a few epochs with
that rounding simulated (PyTorch's ``FakeQuantize``: per-tensor u8 activations with MinMax ranges,
per-channel symmetric s8 weights: the graph ONNX Runtime builds), BatchNorm folded into the
convolutions as ORT folds it. The target is the FP32 model's own embedding (self-distillation,
``1 - cosine``), so no labels, classifier or sampler are needed and only training images are seen.

The fine-tuned network is not re-calibrated afterwards: :mod:`bpm.export.qdq` writes its own learned
ranges and rounded weights as the QDQ graph, so ONNX Runtime computes on the grid the weights were
tuned for (re-calibrating them, as a first version did, cost the real MobileNet-V2 more than the
tuning gained: 40.11 % mAP tuned against 40.67 % untuned).
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                                   disable_observer)
from torch.fx.experimental.optimization import fuse
from torch.nn.utils import parametrize

from bpm.models.backbones.efficientnet_lite import same_pad_stride2

_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
#: Functions whose tensor output ORT stores in 8 bits: sums, and paddings (EfficientNet-Lite's TF
#: "SAME" padding before a stride-2 convolution, one node thanks to ``torch.fx.wrap``).
_ROUNDED_FUNCTIONS = (operator.add, torch.add, F.pad, same_pad_stride2)


def activation_fake_quant() -> FakeQuantize:
    """u8, one range per tensor, zero included: ONNX Runtime's activation quantisation."""
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine)


#: The symmetric weight grid of ``--int8_weight_bits``: ONNX Runtime's [-127, 127], or [-64, 64] with
#: ``reduce_range`` (7 bits: no AVX2 pair saturation, :func:`bpm.models.onnx_graph.cannot_saturate`).
WEIGHT_LIMITS = {8: 127, 7: 64}


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric rounding of a convolution's (BatchNorm-folded) weight."""

    def __init__(self, weight_bits: int = 8) -> None:
        super().__init__()
        limit = WEIGHT_LIMITS[weight_bits]
        self.fake_quant = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-limit,
                                       quant_max=limit, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       ch_axis=0)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.fake_quant(weight)


def _tensor_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes that compute tensors, as opposed to size arithmetic a traced ``x.shape[-1] % 2`` leaves
    in the graph (integer ``add`` nodes, which must not get a rounding)."""
    tensors: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op in ("placeholder", "call_module"):
            tensors.add(node)
        elif node.op in ("call_function", "call_method") and node.target not in (getattr, "size", "dim"):
            if any(arg in tensors for arg in node.all_input_nodes):
                tensors.add(node)
    return tensors


def _quantised_outputs(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """Nodes whose output ORT stores in 8 bits: the input, activations, sums, explicit paddings (so
    that the convolution after one reads 8 bits and fuses), and convolutions no activation follows
    (a convolution followed by ReLU/ReLU6 is fused with it)."""
    tensors = _tensor_nodes(graph)
    chosen = []
    for node in graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "placeholder" or isinstance(module, _ACTIVATIONS):
            chosen.append(node)
        elif node.op == "call_function" and node.target in _ROUNDED_FUNCTIONS and node in tensors:
            chosen.append(node)
        elif isinstance(module, nn.Conv2d) and not all(
                u.op == "call_module" and isinstance(modules.get(u.target), _ACTIVATIONS) for u in node.users):
            chosen.append(node)
    return chosen


def quantisation_aware_trunk(trunk: nn.Module, weight_bits: int = 8) -> fx.GraphModule:
    """A BatchNorm-folded copy of ``trunk`` with 8-bit rounding simulated on weights and activations."""
    folded = fuse(copy.deepcopy(trunk).eval())
    modules = dict(folded.named_modules())
    for index, node in enumerate(_quantised_outputs(folded.graph, modules)):
        name = f"activation_fake_quant_{index}"
        folded.add_module(name, activation_fake_quant())
        with folded.graph.inserting_after(node):
            rounded = folded.graph.call_module(name, (node,))
        node.replace_all_uses_with(rounded, delete_user_cb=lambda user: user is not rounded)
    for module in folded.modules():
        if isinstance(module, nn.Conv2d):
            parametrize.register_parametrization(module, "weight", _WeightFakeQuant(weight_bits))
    folded.graph.lint()
    folded.recompile()
    return folded


def quantisation_aware_model(model: nn.Module, weight_bits: int = 8) -> nn.Module:
    """A copy of ``model`` (a :class:`ReidModel`) whose trunk is :func:`quantisation_aware_trunk` and
    whose pooled feature is rounded to u8 as well (ORT stores the pooling output in 8 bits)."""
    student = copy.deepcopy(model).float().eval()
    student.base = quantisation_aware_trunk(model.base, weight_bits)
    student.pool = nn.Sequential(student.pool, activation_fake_quant())
    return student


def freeze_ranges(student: nn.Module) -> None:
    """Stop the range observers: the ranges become the ones the INT8 file will carry.

    Weight ranges are re-read from the final weights (per channel, symmetric: max |w| / 127, or / 64
    with 7-bit weights, as ONNX Runtime's quantiser picks them): the file's grid is the one the final
    weights define, not a moving average of earlier steps, and no weight is clipped.
    """
    for conv in student.modules():
        if isinstance(conv, nn.Conv2d) and parametrize.is_parametrized(conv, "weight"):
            fake_quant = conv.parametrizations.weight[0].fake_quant
            fake_quant.activation_post_process.reset_min_max_vals()  # empty: the next call takes its min/max
            fake_quant.enable_observer()
            with torch.no_grad():
                fake_quant(conv.parametrizations.weight.original)
    student.apply(disable_observer)


@dataclass(frozen=True)
class QatResult:
    epochs: int
    steps: int
    images: int
    first_loss: float
    last_loss: float

    def describe(self) -> str:
        return (f"quantisation-aware fine-tuning: {self.epochs} epoch(s), {self.steps} steps on {self.images} "
                f"training images; 1 - cosine to FP32 with INT8 rounding simulated: first steps "
                f"{self.first_loss:.4f}, last steps {self.last_loss:.4f}")


def finetune_for_int8(model: nn.Module, images: Sequence, load_batch: Callable[[Sequence], torch.Tensor],
                      epochs: int, lr: float = 1e-4, batch_size: int = 32, seed: int = 0,
                      log: Callable[[str], None] = lambda line: None,
                      weight_bits: int = 8) -> tuple[nn.Module, QatResult]:
    """``model`` (a :class:`ReidModel` in eval mode) fine-tuned to keep its embedding under INT8: the
    :func:`quantisation_aware_model` after training, its ranges frozen (:func:`freeze_ranges`), ready
    for :func:`bpm.export.qdq.export_fine_tuned` to write as the QDQ graph ONNX Runtime runs.

    ``load_batch(items)`` turns a slice of ``images`` into a normalised ``[N, 3, H, W]`` batch. The
    learning rate follows a cosine to zero; images are shuffled and flipped with a seeded generator.
    ``weight_bits`` 7 simulates ``--int8_weight_bits 7`` (weights in [-64, 64]). With two epochs or
    more the activation ranges stop moving for the last epoch, so the weights settle on the ranges
    the file will carry.
    """
    teacher = model.float().eval()
    student = quantisation_aware_model(teacher, weight_bits)
    optimizer = torch.optim.Adam(student.base.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total, step, losses = epochs * steps_per_epoch, 0, []
    student.eval()  # BatchNorm is folded; the neck's BatchNorm keeps the statistics that are exported
    for epoch in range(epochs):
        if epochs > 1 and epoch == epochs - 1:
            for module in student.modules():
                if isinstance(module, FakeQuantize) and module.qscheme == torch.per_tensor_affine:
                    module.disable_observer()
        order = torch.randperm(len(images), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = load_batch([images[i] for i in order[start:start + batch_size]])
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            with torch.no_grad():
                target = teacher(batch)
            loss = (1 - nn.functional.cosine_similarity(student(batch), target, dim=1)).mean()
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        log(f"  INT8 fine-tuning epoch {epoch + 1}/{epochs}: 1 - cosine {sum(losses[-steps_per_epoch:]) / steps_per_epoch:.4f}")
    freeze_ranges(student)
    window = max(1, min(len(losses) // 4, steps_per_epoch))
    return student, QatResult(epochs, step, len(images), sum(losses[:window]) / window,
                              sum(losses[-window:]) / window)
