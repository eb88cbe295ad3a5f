"""Apex-style opt-levels O0-O3 rebuilt on ``torch.amp``.

``PrecisionPolicy`` says how a model and its inputs are cast and whether autocast runs; every
consumer (trainer, feature extraction, rank lists, export) asks it instead of re-deciding.
``PrecisionStepper`` owns what training needs on top: FP32 master weights (O2), the loss
scaler, and skipping of non-finite steps.

Levels:
  O0  true FP32 everywhere (on CUDA this also turns TF32 off, which PyTorch enables for convolutions,
      but only while the policy runs the model: see ``PrecisionPolicy.autocast``).
  O1  FP32 weights, ``torch.autocast`` runs eligible ops in half precision.
  O2  half-precision weights except BatchNorm (``keep_batchnorm_fp32``), FP32 master weights
      in the optimizer, loss scaling (dynamic by default for float16).
  O3  pure half precision (inference; training warns that it is not expected to converge).
The triplet loss and all distance matrices are FP32 at every level (they cast themselves).
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from bpm.errors import BpmError

OPT_LEVELS = ("O0", "O1", "O2", "O3")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)
DYNAMIC_INIT_SCALE = 2.0**16


def resolve_device(sys_device_ids: tuple[int, ...], local_rank: int = 0) -> torch.device:
    """The original's ``-d`` switch: ``()`` is the CPU, ``(i,)`` GPU ``i``.

    Several ids describe a one-machine distributed job (``bpm.distributed``): every id is
    checked, and the process with local rank ``r`` gets GPU ``ids[r]``.
    """
    if len(sys_device_ids) == 0:
        return torch.device("cpu")
    ids = tuple(sys_device_ids)
    if not torch.cuda.is_available():
        raise BpmError(f"-d {ids}: CUDA is not available on this machine; use -d '()' for the CPU")
    for index in ids:
        if not 0 <= index < torch.cuda.device_count():
            raise BpmError(
                f"-d {ids}: this machine has {torch.cuda.device_count()} GPU(s) (ids 0..{torch.cuda.device_count() - 1}); "
                "use existing ids or -d '()' for the CPU"
            )
    if len(set(ids)) != len(ids):
        raise BpmError(f"-d {ids}: a GPU id is listed twice; each process needs its own GPU")
    if not 0 <= local_rank < len(ids):
        raise BpmError(f"-d {ids}: local rank {local_rank} has no GPU id (give one id per process on this machine)")
    return torch.device("cuda", ids[local_rank])


@functools.lru_cache(maxsize=None)
def _cpu_supports(dtype: torch.dtype) -> bool:
    """Whether this CPU build trains a conv + BatchNorm block in ``dtype`` (forward and backward).

    Probed rather than assumed: CPU float16 kernels arrived in PyTorch piecemeal.
    """
    try:
        with torch.random.fork_rng(devices=[]):  # the probe must not shift the seeded RNG stream
            conv = nn.Conv2d(3, 4, 3).to(dtype)
        conv(torch.ones(2, 3, 5, 5, dtype=dtype)).float().sum().backward()
        return bool(torch.isfinite(conv.weight.grad.float()).all())
    except (RuntimeError, NotImplementedError):
        return False


@functools.lru_cache(maxsize=None)
def _native_mixed_batchnorm(device_type: str, dtype: torch.dtype) -> bool:
    """Whether BatchNorm with FP32 parameters accepts ``dtype`` input natively (forward and backward).

    cuDNN does, computing the statistics in FP32 and returning ``dtype``; that is cheaper than
    casting every BatchNorm input up and its output down. On the CPU we always cast: its mixed
    kernels occasionally gave non-finite training steps at O2 in our tests.
    """
    if device_type == "cpu":
        return False
    try:
        bn = nn.BatchNorm2d(2).to(device_type)
        x = torch.ones(2, 2, 3, 3, dtype=dtype, device=device_type, requires_grad=True)
        out = bn(x)
        out.float().sum().backward()
        return out.dtype == dtype and x.grad is not None and x.grad.dtype == dtype
    except (RuntimeError, NotImplementedError):
        return False


def _bn_input_to_fp32(module: nn.Module, inputs: tuple) -> tuple:
    # The forward hook sees the already-cast inputs, so remember the incoming dtype here.
    module._bpm_incoming_dtype = inputs[0].dtype
    return tuple(x.to(module.weight.dtype) if torch.is_tensor(x) else x for x in inputs)


def _bn_output_to_half(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(module._bpm_incoming_dtype)


def check_loss_scale(loss_scale: float | int | str | None) -> float | str | None:
    """``None`` (the level's default), ``"dynamic"`` or a positive finite number, as a float."""
    if loss_scale is None or loss_scale == "dynamic":
        return loss_scale
    try:
        value = float(loss_scale)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BpmError(f"--loss-scale: expected a positive finite number or 'dynamic', got {loss_scale!r}")
    return value


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
        """Validate the flags once, so every later failure is a bug rather than a user error."""
        level = str(opt_level).upper()
        if level not in OPT_LEVELS:
            raise BpmError(f"--opt-level: unknown level {opt_level!r}; expected one of {', '.join(OPT_LEVELS)}")
        device = torch.device(device)
        if amp_dtype is None:
            amp_dtype = "float16" if device.type == "cuda" else "bfloat16"
        if amp_dtype not in _DTYPES:
            raise BpmError(f"--amp_dtype: expected float16 or bfloat16, got {amp_dtype!r}")
        half = _DTYPES[amp_dtype]
        if level != "O0":
            if device.type == "cpu" and not _cpu_supports(half):
                raise BpmError(f"--amp_dtype {amp_dtype}: this CPU build cannot train in {amp_dtype}; use bfloat16")
            if device.type == "cuda" and half == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                raise BpmError(f"--amp_dtype bfloat16: GPU {device} does not support bfloat16; use float16")
        loss_scale = check_loss_scale(loss_scale)
        if level == "O3" and loss_scale is not None:
            raise BpmError("--loss-scale: not available at O3 (no FP32 master weights to unscale into); use O2")
        return cls(level, device, half, keep_batchnorm_fp32, loss_scale)

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
        """Explicit ``--loss-scale`` (O0-O2), or float16 gradients at O1/O2 that would underflow without it."""
        if self.opt_level == "O3":
            return False
        if self.loss_scale is not None:
            return True
        return self.opt_level in ("O1", "O2") and self.half_dtype == torch.float16

    @property
    def static_loss_scale(self) -> float | None:
        return self.loss_scale if isinstance(self.loss_scale, float) else None

    @property
    def channels_last(self) -> bool:
        """Whether models and inputs use the channels-last layout.

        It is the faster layout for convolutions on tensor cores and, in FP32, on current CPUs
        (oneDNN); it changes no numbers. Half-precision CPU convolutions stay contiguous: with
        channels-last, bfloat16 depthwise convolutions on tiny feature maps gave NaN weight
        gradients in our tests (PyTorch 2.14 CPU).
        """
        return self.device.type == "cuda" or self.opt_level == "O0"

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move to the device and cast: FP32 at O0/O1, half at O2/O3 with BatchNorm FP32 if asked.

        FP32 BatchNorm matters because running statistics of half-precision activations are
        too coarse in FP16. Where the backend cannot feed half input to FP32 BatchNorm itself,
        hooks cast around each such layer (what Apex did).
        """
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        if not self.casts_weights:
            return model.to(self.device, torch.float32, memory_format=layout)
        model = model.to(self.device, self.half_dtype, memory_format=layout)
        if self.keep_batchnorm_fp32:
            native = _native_mixed_batchnorm(self.device.type, self.half_dtype)
            for module in model.modules():
                if isinstance(module, _BATCHNORMS):
                    module.float()
                    if not native and not getattr(module, "_bpm_fp32_hooks", False):
                        module.register_forward_pre_hook(_bn_input_to_fp32)
                        module.register_forward_hook(_bn_output_to_half)
                        module._bpm_fp32_hooks = True
        return model

    @property
    def forbids_tf32(self) -> bool:
        """O0 on CUDA means true FP32: TF32 would round convolution and matmul inputs to 10 mantissa bits."""
        return self.device.type == "cuda" and self.opt_level == "O0"

    @contextlib.contextmanager
    def fp32_math(self) -> Iterator[None]:
        """TF32 off inside (at O0 on CUDA), the caller's TF32 flags back afterwards.

        The flags are process-wide, so the policy holds them only while it computes (forward in
        :meth:`autocast`, backward in :meth:`PrecisionStepper.step`): importing or using bpm must
        not change the numerics of the user's own models.
        """
        if not self.forbids_tf32:
            yield
            return
        # The matmul setting is saved as a precision name, so a user's "medium" comes back as "medium".
        conv_tf32, matmul_precision = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = conv_tf32
            torch.set_float32_matmul_precision(matmul_precision)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The numerics the model runs under: ``torch.autocast`` at O1, no TF32 at O0 on CUDA."""
        with self.fp32_math():
            if self.opt_level != "O1":
                yield
                return
            with torch.autocast(device_type=self.device.type, dtype=self.half_dtype):
                yield

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, self.input_dtype, non_blocking=self.device.type == "cuda")
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.dim() == 4 else images

    def describe(self) -> str:
        """One line for the run log: what is half, what stays FP32, how the loss is scaled."""
        dtype = str(self.half_dtype).replace("torch.", "")
        if self.opt_level == "O0":
            parts = ["FP32"]
        elif self.opt_level == "O1":
            parts = [f"autocast {dtype}", "FP32 weights"]
        else:
            parts = [f"{dtype} weights" if self.opt_level == "O2" else f"pure {dtype}"]
            parts.append("FP32 BatchNorm" if self.keep_batchnorm_fp32 else f"{dtype} BatchNorm")
            if self.uses_master_weights:
                parts.append("FP32 master weights")
        if self.uses_loss_scaling:
            static = self.static_loss_scale
            parts.append(f"static loss scale {static:g}" if static is not None else "dynamic loss scale")
        return f"{self.opt_level} ({', '.join(parts)})"


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """One device sync for the lot: a sum is non-finite exactly when some element is inf or NaN."""
    sums = [t.detach().sum(dtype=torch.float32) for t in tensors]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())


class PrecisionStepper:
    """Backward pass and optimizer step for a policy: master weights, loss scaling, skip of non-finite steps.

    A step whose loss or gradients are not finite changes no weight and no optimizer state; with
    dynamic scaling the scale is halved, with a static scale it stays. ``consecutive_skips`` lets
    the trainer stop a run that only produces non-finite steps.
    """

    def __init__(self, policy: PrecisionPolicy, model: nn.Module) -> None:
        self.policy = policy
        self.model_params = [p for p in model.parameters() if p.requires_grad]
        if policy.opt_level == "O3":
            warnings.warn("training at O3 (pure half precision) is not expected to converge; use O2", stacklevel=2)
        if policy.uses_master_weights:
            self.master_params = [p.detach().to(torch.float32, copy=True).requires_grad_(True) for p in self.model_params]
        else:
            self.master_params = self.model_params
        self.scaler: torch.amp.GradScaler | None = None
        if policy.uses_loss_scaling:
            init = policy.static_loss_scale or DYNAMIC_INIT_SCALE
            self.scaler = torch.amp.GradScaler(policy.device.type, init_scale=init)
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
        if self.policy.uses_master_weights:
            for p in self.model_params:
                p.grad = None
        loss_finite = bool(torch.isfinite(loss.detach()))
        if loss_finite:
            with self.policy.fp32_math():
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if self.policy.uses_master_weights:
                for master, param in zip(self.master_params, self.model_params):
                    master.grad = None if param.grad is None else param.grad.float()
                    param.grad = None
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
        finite = loss_finite and _all_finite(p.grad for p in self.master_params if p.grad is not None)
        if finite:
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
            if self.policy.uses_master_weights:
                with torch.no_grad():
                    for master, param in zip(self.master_params, self.model_params):
                        param.copy_(master)
        else:
            optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None and loss_finite:
            # Unscaling recorded whether the gradients overflowed: a dynamic scale halves on
            # overflow and grows after a run of good steps; a static one is put back as it was.
            self.scaler.update(self.policy.static_loss_scale)
        if finite:
            self.consecutive_skips = 0
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        return finite

    def state_dict(self) -> dict:
        state: dict = {"skipped_steps": self.skipped_steps}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.policy.uses_master_weights:
            state["master_params"] = [p.detach().clone() for p in self.master_params]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore after the model's own weights were loaded.

        FP32 masters in the checkpoint are the precise weights, so they win over the model's
        (possibly FP16) copy even when this run has no masters. A checkpoint without masters
        (say, from an O0 run resumed at O2) re-derives them from the loaded model. A static
        ``--loss-scale`` keeps its value rather than the checkpoint's.
        """
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_skips = 0
        if self.scaler is not None and "scaler" in state and self.policy.static_loss_scale is None:
            self.scaler.load_state_dict(state["scaler"])
        saved = state.get("master_params")
        if saved is not None and len(saved) != len(self.model_params):
            raise BpmError(
                f"checkpoint precision state holds {len(saved)} master weights, this model has "
                f"{len(self.model_params)} trainable tensors"
            )
        with torch.no_grad():
            if saved is not None:
                for param, value in zip(self.model_params, saved):
                    param.copy_(value)
            if self.policy.uses_master_weights:
                sources = saved if saved is not None else self.model_params
                for master, value in zip(self.master_params, sources):
                    master.copy_(value)
