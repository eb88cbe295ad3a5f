"""Quantisation-aware fine-tuning: fake-quant placement, a loop that converges, ranges frozen for the file."""
from __future__ import annotations

import operator

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize

from bpm.export.qat import finetune_for_int8, freeze_ranges, quantisation_aware_model, quantisation_aware_trunk
from bpm.models.reid import build_model


def _model(net: str = "mobilenetV2", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(net).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.1, 0.1)
    return model


def test_rounding_sits_where_onnx_runtime_quantises():
    folded = quantisation_aware_trunk(_model().base)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    modules = dict(folded.named_modules())
    rounded = {node.args[0].target if node.args[0].op != "placeholder" else "input"
               for node in folded.graph.nodes
               if node.op == "call_module" and isinstance(modules[node.target], FakeQuantize)}
    assert "input" in rounded and "features.0.2" in rounded  # the image, the first ReLU6
    assert "features.0.0" not in rounded  # a convolution followed by ReLU6 is fused with it
    assert "features.1.conv.1" in rounded  # a projection (no activation after it)
    assert operator.add in rounded  # residual sums
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)


def test_fine_tuning_brings_the_rounded_embedding_closer_and_freezes_its_ranges():
    model = _model(seed=1)
    with torch.no_grad():  # one wide channel per layer: per-tensor 8-bit ranges too coarse for the others,
        for module in model.base.modules():  # as in trained networks (a random one rounds almost losslessly)
            if isinstance(module, nn.BatchNorm2d):
                module.weight[0] *= 300
    images = [torch.rand(3, 64, 32, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(32)]
    student, result = finetune_for_int8(model, images, lambda items: torch.stack(list(items)), epochs=2,
                                        lr=1e-4, batch_size=16)
    assert result.steps == 4 and result.images == 32
    batch = torch.stack(images)
    untuned = quantisation_aware_model(model)  # the same rounding, ranges observed on the same images
    with torch.no_grad():
        untuned(batch)
        freeze_ranges(untuned)
        target = model(batch)
        error = {name: float((1 - nn.functional.cosine_similarity(net(batch), target)).mean())
                 for name, net in (("tuned", student), ("untuned", untuned))}
    assert error["tuned"] < error["untuned"], error
    rounding = [m for m in student.modules() if isinstance(m, FakeQuantize)]
    assert rounding and not any(bool(m.observer_enabled) for m in rounding)  # the file's ranges, fixed
    with torch.no_grad():
        assert torch.isfinite(student(torch.stack(images[:4]))).all()
    for conv in (m for m in student.modules() if isinstance(m, nn.Conv2d)):
        weight = conv.parametrizations.weight.original.detach()
        expected = weight.abs().flatten(1).amax(1) / 127  # the final weights' own grid, as ORT's quantiser picks
        assert torch.allclose(conv.parametrizations.weight[0].fake_quant.scale, expected, rtol=1e-6)


class _SizeArithmetic(nn.Module):
    """A trunk whose padding depends on the input's size, traced by FX as integer nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = x.shape[-1] % 2 + 1
        return self.act(self.conv(torch.nn.functional.pad(x, (extra, 1, 1, 1))))


def test_size_arithmetic_gets_no_rounding_but_the_padding_does():
    """An integer ``add`` is not a tensor sum (rounding it crashed EfficientNet-Lite's fine-tuning);
    the padded tensor is rounded, so the convolution after it reads 8 bits in ORT."""
    trunk = quantisation_aware_trunk(_SizeArithmetic().eval())
    rounded = [node.args[0] for node in trunk.graph.nodes
               if node.op == "call_module" and isinstance(trunk.get_submodule(node.target), FakeQuantize)]
    kinds = sorted(node.op if node.op != "call_function" else node.target.__name__ for node in rounded)
    assert kinds == ["call_module", "pad", "placeholder"]
    assert trunk(torch.rand(2, 3, 9, 7)).shape == (2, 4, 5, 4)
