"""Quantisation-aware fine-tuning: fake-quant placement, exact write-back, a loop that converges and exports."""
from __future__ import annotations

import operator

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, disable_fake_quant, disable_observer

from bpm.export.qat import finetune_for_int8, quantisation_aware_trunk, write_back
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


def test_write_back_reproduces_the_tuned_function_in_the_original_layout():
    model = _model()
    folded = quantisation_aware_trunk(model.base)
    with torch.no_grad():
        for module in folded.modules():
            if isinstance(module, nn.Conv2d):
                module.parametrizations.weight.original.mul_(1.01)
                module.bias.add_(0.01)
    folded.apply(disable_fake_quant)
    folded.apply(disable_observer)
    keys = set(model.base.state_dict())
    write_back(model.base, folded)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(model.base(x), folded(x), atol=1e-4, rtol=1e-4)
    assert set(model.base.state_dict()) == keys


def test_fine_tuning_brings_the_rounded_embedding_closer():
    model = _model(seed=1)
    images = [torch.rand(3, 64, 32, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(48)]
    tuned, result = finetune_for_int8(model, images, lambda items: torch.stack(list(items)), epochs=3,
                                      lr=1e-3, batch_size=16)
    assert result.steps == 9 and result.images == 48
    assert result.last_loss < result.first_loss
    assert set(tuned.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        assert torch.isfinite(tuned(torch.stack(images[:4]))).all()
    assert result.used == ("fine-tuned" if result.end_error < result.start_error else "start"), result


def test_fine_tuning_that_makes_it_worse_keeps_the_start_model():
    """Reliability III finding 8: a fine-tuning run that raises the measured error is not used."""
    model = _model(seed=1)
    images = [torch.rand(3, 64, 32, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(32)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, result = finetune_for_int8(model, images, lambda items: torch.stack(list(items)), epochs=1,
                                      lr=5.0, batch_size=16)  # a learning rate that wrecks the trunk
    assert result.end_error > result.start_error
    assert result.used == "start" and "kept the starting model" in result.describe()
    for key, value in tuned.state_dict().items():
        assert torch.equal(value, before[key]), key
