"""Apex-style opt-levels O0-O3 rebuilt on ``torch.amp``.

``PrecisionPolicy`` says how a model and its inputs are cast and whether autocast runs; every
consumer (trainer, feature extraction, rank lists, export) asks it instead of re-deciding.
``PrecisionStepper`` owns what training needs on top: FP32 master weights (O2), the loss
scaler, and skipping of non-finite steps.

Levels:
  O0  true FP32 everywhere.
  O1  FP32 weights, ``torch.autocast`` runs eligible ops in half precision.
  O2  half-precision weights except BatchNorm (``keep_batchnorm_fp32``), FP32 master weights
      in the optimizer, loss scaling (dynamic by default for float16).
  O3  pure half precision (inference; training warns that it is not expected to converge).
The triplet loss and all distance matrices are FP32 at every level (they cast themselves).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from bpm.errors import BpmError

OPT_LEVELS = ("O0", "O1", "O2", "O3")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)


def resolve_device(sys_device_ids: tuple[int, ...]) -> torch.device:
    """The original's ``-d`` switch: ``()`` is the CPU, ``(i,)`` GPU ``i``."""
    if len(sys_device_ids) == 0:
        return torch.device("cpu")
    if len(sys_device_ids) > 1:
        raise BpmError(
            f"-d {sys_device_ids}: several GPUs need the distributed launcher "
            "(torchrun --nproc_per_node N script/experiment/train.py ...); use one id or '()' for CPU"
        )
    index = sys_device_ids[0]
    if not torch.cuda.is_available():
        raise BpmError(f"-d ({index},): CUDA is not available on this machine; use -d '()' for the CPU")
    if index >= torch.cuda.device_count():
        raise BpmError(
            f"-d ({index},): this machine has {torch.cuda.device_count()} GPU(s) (ids 0..{torch.cuda.device_count() - 1}); "
            "use an existing id or -d '()' for the CPU"
        )
    return torch.device("cuda", index)


def _half_supported_on_cpu(dtype: torch.dtype) -> bool:
    try:
        conv = nn.Conv2d(3, 4, 3).to(dtype)
        conv(torch.zeros(1, 3, 5, 5, dtype=dtype)).sum().item()
        return True
    except (RuntimeError, NotImplementedError):
        return False


def _bn_input_to_fp32(module: nn.Module, inputs: tuple) -> tuple:
    return tuple(x.to(module.weight.dtype) if torch.is_tensor(x) else x for x in inputs)


def _bn_output_to_half(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(inputs[0].dtype)


@dataclass(frozen=True)
class PrecisionPolicy:
    """How to cast a model and its inputs for one opt-level on one device."""

    opt_level: str
    device: torch.device
    half_dtype: torch.dtype
    keep_batchnorm_fp32: bool = True
    loss_scale: float | str | None = None

    @classmethod
    def create(
        cls,
        opt_level: str,
        device: torch.device | str = "cpu",
        amp_dtype: str | None = None,
        keep_batchnorm_fp32: bool = True,
        loss_scale: float | str | None = None,
    ) -> "PrecisionPolicy":
        if opt_level not in OPT_LEVELS:
            raise BpmError(f"--opt-level: unknown level {opt_level!r}; expected one of {', '.join(OPT_LEVELS)}")
        device = torch.device(device)
        if amp_dtype is None:
            amp_dtype = "float16" if device.type == "cuda" else "bfloat16"
        if amp_dtype not in _DTYPES:
            raise BpmError(f"--amp_dtype: expected float16 or bfloat16, got {amp_dtype!r}")
        half = _DTYPES[amp_dtype]
        if opt_level != "O0" and device.type == "cpu" and not _half_supported_on_cpu(half):
            raise BpmError(f"--amp_dtype {amp_dtype}: this CPU build cannot run {amp_dtype} convolutions; use bfloat16")
        if opt_level == "O3" and loss_scale is not None:
            raise BpmError("--loss-scale: not available at O3 (no FP32 master weights to unscale into); use O2")
        return cls(opt_level, device, half, keep_batchnorm_fp32, loss_scale)

    @property
    def casts_weights(self) -> bool:
        return self.opt_level in ("O2", "O3")

    @property
    def input_dtype(self) -> torch.dtype:
        return self.half_dtype if self.casts_weights else torch.float32

    @property
    def uses_master_weights(self) -> bool:
        return self.opt_level == "O2"

    @property
    def uses_loss_scaling(self) -> bool:
        if self.opt_level in ("O0", "O3"):
            return self.loss_scale is not None and self.opt_level == "O0"
        return self.loss_scale is not None or self.half_dtype == torch.float16

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move to the device and cast weights for O2/O3, keeping BatchNorm FP32 if asked.

        FP32 BatchNorm layers get hooks that feed them FP32 and hand half precision on, which
        is what Apex did: BN statistics of half-precision activations are too coarse in FP16.
        """
        model = model.to(self.device)
        if not self.casts_weights:
            return model
        model = model.to(self.half_dtype)
        if self.keep_batchnorm_fp32:
            for module in model.modules():
                if isinstance(module, _BATCHNORMS):
                    module.float()
                    module.register_forward_pre_hook(_bn_input_to_fp32)
                    module.register_forward_hook(_bn_output_to_half)
        return model

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.opt_level != "O1":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.half_dtype)

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        non_blocking = self.device.type == "cuda"
        return images.to(self.device, non_blocking=non_blocking).to(self.input_dtype)

    def describe(self) -> str:
        dtype = str(self.half_dtype).replace("torch.", "")
        return "O0 (FP32)" if self.opt_level == "O0" else f"{self.opt_level} ({dtype})"


class PrecisionStepper:
    """Backward pass and optimizer step for a policy: master weights, loss scaling, skip of non-finite steps."""

    def __init__(self, policy: PrecisionPolicy, model: nn.Module) -> None:
        self.policy = policy
        self.model_params = [p for p in model.parameters() if p.requires_grad]
        if policy.opt_level == "O3":
            warnings.warn("training at O3 (pure half precision) is not expected to converge; use O2", stacklevel=2)
        if policy.uses_master_weights:
            self.master_params = [p.detach().clone().float().requires_grad_(True) for p in self.model_params]
        else:
            self.master_params = self.model_params
        self.scaler: torch.amp.GradScaler | None = None
        if policy.uses_loss_scaling:
            static = isinstance(policy.loss_scale, float)
            self.scaler = torch.amp.GradScaler(
                policy.device.type, init_scale=policy.loss_scale if static else 2.0**16
            )
        self.skipped_steps = 0
        self.consecutive_skips = 0

    def optimizer_params(self) -> list[torch.Tensor]:
        """The tensors the optimizer must own: FP32 masters at O2, the model's own otherwise."""
        return self.master_params

    @property
    def scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Backpropagate ``loss`` and update; returns False when the step was skipped as non-finite."""
        optimizer.zero_grad(set_to_none=True)
        for p in self.model_params:
            p.grad = None
        loss_finite = bool(torch.isfinite(loss.detach()))
        if loss_finite:
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.policy.uses_master_weights:
            for master, param in zip(self.master_params, self.model_params):
                master.grad = None if param.grad is None else param.grad.detach().float()
        if self.scaler is not None and loss_finite:
            self.scaler.unscale_(optimizer)
        grads = [p.grad for p in self.master_params if p.grad is not None]
        grads_finite = loss_finite and bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        if grads_finite:
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
            if self.policy.uses_master_weights:
                with torch.no_grad():
                    for master, param in zip(self.master_params, self.model_params):
                        param.copy_(master)
        if self.scaler is not None and loss_finite:
            static = isinstance(self.policy.loss_scale, float)
            self.scaler.update(self.policy.loss_scale if static else None)
        if grads_finite:
            self.consecutive_skips = 0
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        return grads_finite

    def state_dict(self) -> dict:
        state: dict = {"skipped_steps": self.skipped_steps}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.policy.uses_master_weights:
            state["master_params"] = [p.detach().clone() for p in self.master_params]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.policy.uses_master_weights and "master_params" in state:
            with torch.no_grad():
                for master, saved, param in zip(self.master_params, state["master_params"], self.model_params):
                    master.copy_(saved)
                    param.copy_(saved)
