"""Quantisation-aware fine-tuning: teach the network to give the same embedding through 8-bit rounding.

Post-training INT8 (even range-equalised) leaves a real re-ID network several mAP points short:
the rounding of ~70 activations accumulates. Here the trunk is fine-tuned for a few epochs with
that rounding simulated (PyTorch's ``FakeQuantize``: per-tensor u8 activations with MinMax ranges,
per-channel symmetric s8 weights: the graph ONNX Runtime builds), BatchNorm folded into the
convolutions as ORT folds it. The target is the FP32 model's own embedding (self-distillation,
``1 - cosine``), so no labels, classifier or sampler are needed and only training images are seen.
The fine-tuned weights are written back into the original layout (each folded BatchNorm becomes
the identity plus the folded bias), so the result exports, loads and quantises like any model.
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from torch.fx.experimental.optimization import fuse
from torch.nn.utils import parametrize

_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def activation_fake_quant() -> FakeQuantize:
    """u8, one range per tensor, zero included: ONNX Runtime's activation quantisation."""
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine)


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric s8 rounding of a convolution's (BatchNorm-folded) weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fake_quant = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127,
                                       quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       ch_axis=0)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.fake_quant(weight)


def _quantised_outputs(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """Nodes whose output ORT stores in 8 bits: the input, activations, sums, and convolutions no
    activation follows (a convolution followed by ReLU/ReLU6 is fused with it)."""
    chosen = []
    for node in graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "placeholder" or isinstance(module, _ACTIVATIONS):
            chosen.append(node)
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            chosen.append(node)
        elif isinstance(module, nn.Conv2d) and not all(
                u.op == "call_module" and isinstance(modules.get(u.target), _ACTIVATIONS) for u in node.users):
            chosen.append(node)
    return chosen


def quantisation_aware_trunk(trunk: nn.Module) -> fx.GraphModule:
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
            parametrize.register_parametrization(module, "weight", _WeightFakeQuant())
    folded.graph.lint()
    folded.recompile()
    return folded


def write_back(trunk: nn.Module, folded: fx.GraphModule) -> None:
    """Copy the fine-tuned folded weights into ``trunk``'s own layout (in place).

    Each convolution takes its folded weight; the BatchNorm that followed it becomes the identity
    with the folded bias, so the function is the fine-tuned one and the keys are the original's.
    """
    modules = dict(trunk.named_modules())
    followed_by = {}
    for node in fx.symbolic_trace(trunk).graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d) and len(node.users) == 1:
            user = next(iter(node.users))
            if user.op == "call_module" and isinstance(modules[user.target], nn.BatchNorm2d):
                followed_by[node.target] = modules[user.target]
    with torch.no_grad():
        for name, conv in modules.items():
            if not isinstance(conv, nn.Conv2d):
                continue
            tuned = folded.get_submodule(name)
            weight = tuned.parametrizations.weight.original if parametrize.is_parametrized(tuned, "weight") \
                else tuned.weight
            conv.weight.copy_(weight)
            bn = followed_by.get(name)
            if bn is None:
                if conv.bias is not None and tuned.bias is not None:
                    conv.bias.copy_(tuned.bias)
                continue
            if conv.bias is not None:
                conv.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.copy_(tuned.bias)


@dataclass(frozen=True)
class QatResult:
    epochs: int
    steps: int
    images: int
    first_loss: float
    last_loss: float
    #: 1 - cosine to FP32 with 8-bit rounding simulated, on the same held images, before and after.
    start_error: float = float("nan")
    end_error: float = float("nan")
    held_images: int = 0
    #: "fine-tuned", or "start" when fine-tuning did not lower the measured error.
    used: str = "fine-tuned"

    def describe(self) -> str:
        verdict = "using the fine-tuned model" if self.used == "fine-tuned" else \
            "kept the starting model (fine-tuning did not lower the error)"
        return (f"quantisation-aware fine-tuning: {self.epochs} epoch(s), {self.steps} steps on {self.images} "
                f"training images; 1 - cosine to FP32 with 8-bit rounding simulated, on {self.held_images} "
                f"images: start {self.start_error:.4f}, fine-tuned {self.end_error:.4f}; {verdict}")


def _evenly(items: Sequence, count: int) -> list:
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def simulated_int8_error(model: nn.Module, teacher: nn.Module, batches: list[torch.Tensor]) -> float:
    """Mean ``1 - cosine`` to ``teacher``'s FP32 embedding of ``model`` with 8-bit rounding simulated.

    The same procedure for any model (ranges observed on ``batches``, then frozen and measured on
    them), so the model fine-tuning started from and the fine-tuned one are compared fairly.
    """
    from torch.ao.quantization import disable_observer

    student = copy.deepcopy(model).float().eval()
    student.base = quantisation_aware_trunk(model.base)
    pool_rounding = activation_fake_quant()
    hook = student.pool.register_forward_hook(lambda _m, _i, output: pool_rounding(output))
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in batches:  # observe the ranges
                student(batch)
            student.apply(disable_observer)
            pool_rounding.apply(disable_observer)
            for batch in batches:
                error = 1 - nn.functional.cosine_similarity(student(batch), teacher(batch), dim=1)
                total, count = total + float(error.sum()), count + len(batch)
    finally:
        hook.remove()
    return total / max(count, 1)


def finetune_for_int8(model: nn.Module, images: Sequence, load_batch: Callable[[Sequence], torch.Tensor],
                      epochs: int, lr: float = 1e-4, batch_size: int = 32, seed: int = 0,
                      log: Callable[[str], None] = lambda line: None) -> tuple[nn.Module, QatResult]:
    """A copy of ``model`` (a :class:`ReidModel` in eval mode) fine-tuned to keep its embedding under INT8.

    ``load_batch(items)`` turns a slice of ``images`` into a normalised ``[N, 3, H, W]`` batch. The
    learning rate follows a cosine to zero; images are shuffled and flipped with a seeded generator.
    """
    teacher = model.float().eval()
    student = copy.deepcopy(teacher)
    student.base = quantisation_aware_trunk(teacher.base)
    pool_rounding = activation_fake_quant()
    hook = student.pool.register_forward_hook(lambda _m, _i, output: pool_rounding(output))
    optimizer = torch.optim.Adam(student.base.parameters(), lr=lr)  # the trunk: what write_back keeps
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total, step, losses = epochs * steps_per_epoch, 0, []
    student.eval()  # BatchNorm is folded; the neck's BatchNorm keeps the statistics that are exported
    # The same images measure the start and the end: fine-tuning can make the error worse (seen:
    # 0.097 -> 0.110 after one epoch), and then the model it started from is the one to quantise.
    held = _evenly(list(images), 64)
    held_batches = [load_batch(held[i:i + batch_size]) for i in range(0, len(held), batch_size)]
    start_error = simulated_int8_error(teacher, teacher, held_batches)
    try:
        for epoch in range(epochs):
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
    finally:
        hook.remove()
    tuned = copy.deepcopy(teacher)
    write_back(tuned.base, student.base)
    end_error = simulated_int8_error(tuned, teacher, held_batches)
    used = "fine-tuned" if end_error < start_error else "start"
    if used == "start":
        tuned = copy.deepcopy(teacher)
    window = max(1, min(len(losses) // 4, steps_per_epoch))
    return tuned.eval(), QatResult(epochs, step, len(images), sum(losses[:window]) / window,
                                   sum(losses[-window:]) / window, start_error, end_error, len(held), used)
