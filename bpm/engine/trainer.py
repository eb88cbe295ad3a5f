"""The training loop: P x K batches -> model (under the precision policy) -> criterion -> step.

The trainer knows nothing about datasets, metrics or which losses it optimises: it gets a model,
training records, a typed :class:`TrainConfig`, optionally a criterion (built from the config
otherwise) and a validation callback, and logs whatever statistics the criterion returns. It owns
checkpointing, so everything needed to resume exactly (model, optimizer, scaler and master
weights, criterion buffers, epoch and step, every RNG state, the sampler seed) lives in one
atomic file.
"""
from __future__ import annotations

import dataclasses
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from bpm.data.loader import train_loader
from bpm.data.records import ImageRecord
from bpm.data.sampler import PKBatchSampler
from bpm.data.transforms import train_transform
from bpm.distill.extra import ExtraBatchSampler
from bpm.distill.targets import CachedTargets, PerStepTargets
from bpm.distributed import DistContext, broadcast_object, gather_for_mining, mean_over_ranks
from bpm.engine.checkpoint import (
    CKPT_NAME, atomic_torch_save, load_checkpoint, resumable_state_dicts, rng_state, set_rng_state,
)
from bpm.engine.config import TrainConfig
from bpm.engine.resume_check import apply_to_optimizer, check_resume
from bpm.engine.logging import RunLogger
from bpm.engine.lr_schedule import lr_at_epoch, set_lr
from bpm.errors import BpmError
from bpm.losses.combine import ReidCriterion
from bpm.models.input_spec import InputSpec
from bpm.models.meta import file_meta
from bpm.models.reid import ReidOutput
from bpm.models.weights import load_model_weights_from_state
from bpm.precision import PrecisionPolicy, PrecisionStepper

# A validation callback returns (mAP, rank-1) for the current model.
Validator = Callable[[torch.nn.Module], tuple[float, float]]


class TrainingInterrupted(BpmError):
    """SIGINT/SIGTERM arrived; a checkpoint was written after the current step."""


@dataclass
class Position:
    """Where training stands: ``epoch`` is 0-based, ``step`` counts batches done within it."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    scores: dict = field(default_factory=dict)


def build_optimizer(cfg: TrainConfig, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """Adam (the original's choice) or SGD with Nesterov momentum, both with weight decay.

    Both use PyTorch's fused kernels, which do the update arithmetic in FP32 whatever the
    weights' dtype. That matters at O3, where the weights themselves are half: the unfused Adam
    computes in float16, where its eps (1e-8) rounds to zero, so any weight whose squared gradient
    underflows gets 0/0 and the whole network turns NaN within a few steps (seen on an H100 and
    reproduced on CPU). It is also one kernel per step instead of one per tensor group on CUDA.
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.Adam(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay, fused=True)


def class_index(train_records: Sequence[ImageRecord]) -> dict[int, int]:
    """Training identity -> classifier output 0..C-1, sorted, so every rank agrees (the ID head's
    classes are global under DDP) and a resumed run maps identities as before."""
    return {pid: index for index, pid in enumerate(sorted({r.pid for r in train_records}))}


def _as_output(out: torch.Tensor | ReidOutput) -> ReidOutput:
    """Models without neck or head (and plain test networks) may return a bare feature tensor."""
    return out if isinstance(out, ReidOutput) else ReidOutput(out, out, None)


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        policy: PrecisionPolicy,
        cfg: TrainConfig,
        train_records: Sequence[ImageRecord],
        exp_dir: Path,
        validator: Validator | None = None,
        rank: int = 0,
        world_size: int = 1,
        criterion: Callable | None = None,
        distill: CachedTargets | PerStepTargets | None = None,
        extra_records: Sequence[ImageRecord] = (),
        *,
        input_spec: InputSpec,
    ) -> None:
        """``distill``: the teacher's target for each sample (by dataset index: ``train_records``, then
        ``extra_records``, the unlabelled crops of ``--distill_extra`` appended to every batch).
        ``input_spec``: what the model takes (size, normalisation: the model group's input size,
        :func:`~bpm.models.input_spec.input_spec_of_model`), for the training transform and the
        checkpoint's record; required, so no caller trains at a size it did not choose."""
        self.cfg = cfg
        self.input_spec = input_spec
        self.policy = policy
        self.exp_dir = Path(exp_dir)
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.dist = DistContext(rank, world_size, device=policy.device)
        self.gather_for_mining = cfg.gather_for_mining and self.dist.enabled
        self.classes = class_index(train_records)
        self._class_of = torch.full((max(self.classes, default=0) + 1,), -1, dtype=torch.long)
        for pid, index in self.classes.items():
            self._class_of[pid] = index
        self.distill = distill
        if criterion is None:
            criterion = ReidCriterion(cfg.loss, len(self.classes), getattr(model, "feature_dim", 0),
                                      distill.dim if distill is not None else 0)
        self.criterion = criterion.to(policy.device) if isinstance(criterion, torch.nn.Module) else criterion
        self.model = _wrap_for_ranks(model, policy, self.dist, cfg.sync_bn)
        self.stepper = PrecisionStepper(policy, self.model)
        # The criterion's own parameters (the distillation projection head, FP32) train with the model.
        own = [p for p in self.criterion.parameters() if p.requires_grad] \
            if isinstance(self.criterion, torch.nn.Module) else []
        self.optimizer = build_optimizer(cfg, [*self.stepper.optimizer_params(), *own])
        self.validator = validator
        self.position = Position()
        self.sampler_seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
        self.sampler_seed = int(broadcast_object(self.dist, self.sampler_seed))  # one data order for all ranks
        self.sampler = PKBatchSampler(
            [r.pid for r in train_records], cfg.ids_per_batch, cfg.ims_per_id, self.sampler_seed, rank, world_size,
            cfg.sampler_epoch,
        )
        if extra_records:
            per_batch = cfg.distill_extra_per_batch or max(1, cfg.ids_per_batch * cfg.ims_per_id // 2)
            self.sampler = ExtraBatchSampler(self.sampler, len(train_records), len(extra_records), per_batch)
        transform = train_transform(
            self.input_spec, cfg.mirror, cfg.crop_prob, cfg.crop_ratio, cfg.erase, cfg.erase_prob, cfg.pad_crop
        )
        self.loader = train_loader([*train_records, *extra_records], transform, self.sampler, cfg.workers)
        self.ckpt_path = self.exp_dir / CKPT_NAME
        self.max_nonfinite_steps = cfg.max_nonfinite_steps
        self.ckpt_every_steps = cfg.ckpt_every_steps
        self._stop_signal: int | None = None
        self._stop_agreed = False

    @property
    def bare_model(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper (evaluation, export)."""
        return self.model.module if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        model = self.bare_model
        return {
            "state_dicts": [model.state_dict(), self.optimizer.state_dict()],
            "ep": self.position.epoch,
            "step": self.position.step,
            "global_step": self.position.global_step,
            "scores": self.position.scores,
            "precision": self.stepper.state_dict(),
            "sampler_seed": self.sampler_seed,
            "rng": rng_state(),
            # Criterion buffers (centre-loss centres); a plain-function criterion has none.
            "criterion": self.criterion.state_dict() if isinstance(self.criterion, torch.nn.Module) else {},
            "net": getattr(model, "net", None),
            "architecture": getattr(model, "architecture", None),
            "num_classes": len(self.classes),
            "opt_level": self.policy.opt_level,
            "input": file_meta(self.input_spec, self.cfg.recipe),  # bpm.models.meta
            # The settings this run trained with: a resume compares its switches with them.
            "train_config": dataclasses.asdict(self.cfg),
        }

    def save_checkpoint(self) -> None:
        if self.is_main:
            atomic_torch_save(self.checkpoint_state(), self.ckpt_path)

    def resume(self, path: Path | None = None, ckpt: dict | None = None) -> list[str]:
        """Continue from ``path`` (default: the run's ``ckpt.pth``), restoring everything saved.

        Switches that differ from the checkpoint's are refused or applied (:mod:`resume_check`);
        returns the applied changes.
        """
        path = Path(path or self.ckpt_path)
        ckpt = load_checkpoint(path) if ckpt is None else ckpt
        applied = check_resume(ckpt, self.cfg, self.model_facts(), path)
        model_state, optimizer_state = resumable_state_dicts(ckpt, path)
        load_model_weights_from_state(self.bare_model, model_state, path)
        # A saved param group carries its kernel choice (the original's and older checkpoints: unfused);
        # keep this run's fused kernels, which O3 needs (see build_optimizer).
        kernels = {key: self.optimizer.defaults[key] for key in ("fused", "foreach") if key in self.optimizer.defaults}
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise BpmError(f"{path}: optimizer state does not match this run's settings ({exc})") from exc
        for group in self.optimizer.param_groups:
            group.update(kernels)
        apply_to_optimizer(self.optimizer, self.cfg)
        self.stepper.load_state_dict(ckpt.get("precision", {}))
        if ckpt.get("criterion") and isinstance(self.criterion, torch.nn.Module):
            self.criterion.load_state_dict(ckpt["criterion"])
        self.position = Position(int(ckpt["ep"]), int(ckpt.get("step", 0)), int(ckpt.get("global_step", 0)),
                                 dict(ckpt.get("scores", {})))
        self.sampler_seed = int(ckpt.get("sampler_seed", self.sampler_seed))
        self.sampler.seed = self.sampler_seed
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        print(f"Resumed from {path} at epoch {self.position.epoch + 1}, step {self.position.step}")
        if applied:
            print(f"Resumed with changed switches (applied from here on): {', '.join(applied)}")
        return applied

    def _checkpoint_left(self) -> str:
        """What a stopped run leaves to resume from, only naming a checkpoint that exists."""
        if self.ckpt_path.is_file():
            return f"last good checkpoint: {self.ckpt_path} (resume with --resume true)"
        return "no checkpoint was written yet (nothing to resume from)"

    def model_facts(self) -> dict:
        """What the checkpoint records about the model, for :func:`check_resume`."""
        model = self.bare_model
        return {"net": getattr(model, "net", None), "architecture": getattr(model, "architecture", None),
                "num_classes": len(self.classes), "resize_h_w": self.input_spec.resize_h_w}

    # ----------------------------------------------------------------- signals
    def _request_stop(self, signum, frame) -> None:
        self._stop_signal = signum

    def _install_signal_handlers(self) -> dict:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self._request_stop)
            except ValueError:  # not the main thread (e.g. under a test runner's thread)
                pass
        return previous

    # ----------------------------------------------------------------- loop
    def train_step(self, images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor | None = None) -> tuple[bool, dict]:
        """One step on a batch; ``indices`` (the samples' dataset indices) find the teacher's targets."""
        self.model.train()
        buffers = [b.detach().clone() for b in self.model.buffers()]
        teacher = None
        if self.distill is not None:
            teacher = self.distill(indices, images).to(self.policy.device)
        images = self.policy.prepare_input(images)
        # Unlabelled samples (label -1) stay -1: only the distillation terms see them.
        targets = torch.where(labels >= 0, self._class_of[labels.clamp(min=0)], labels).to(self.policy.device)
        with self.policy.autocast():
            outputs = _as_output(self.model(images))
        gather = (lambda f, t: gather_for_mining(self.dist, f, t)) if self.gather_for_mining else None
        loss, values = (self.criterion(outputs, targets, gather) if teacher is None
                        else self.criterion(outputs, targets, gather, teacher=teacher))
        if self.dist.enabled:
            # One collective per step: the job's mean statistics, whether any rank saw a non-finite
            # loss (then every rank skips, or DDP's all-reduce would wait for the skipping one), and
            # whether any rank was asked to stop (then all stop after this same step).
            values = mean_over_ranks(self.dist, {**values, "stop": float(self._stop_signal is not None)})
            self._stop_agreed = values.pop("stop") > 0
            if not math.isfinite(values["loss"]):
                loss = loss.detach() * float("nan")
        stepped = self.stepper.step(loss, self.optimizer)
        if not stepped:
            # The forward pass already moved BatchNorm's running statistics, possibly to inf/NaN;
            # a skipped step must leave the model exactly as it was.
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), buffers):
                    buffer.copy_(saved)
        return stepped, values

    def fit(self, logger: RunLogger | None = None) -> Position:
        previous = self._install_signal_handlers()
        try:
            while self.position.epoch < self.cfg.total_epochs:
                self._train_epoch(logger)
                self.position.epoch += 1
                self.position.step = 0
                self._maybe_validate(logger)
                self.save_checkpoint()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.position

    def _train_epoch(self, logger: RunLogger | None) -> None:
        epoch = self.position.epoch
        lr = lr_at_epoch(self.cfg, epoch + 1)
        set_lr(self.optimizer, lr)
        self.sampler.set_epoch(epoch, self.position.step)
        first_step = self.position.step + 1
        steps_to_run = len(self.sampler) - self.position.step  # fewer after a mid-epoch resume
        totals: dict[str, float] = {}
        count = 0
        start = time.time()
        show_bar = self.is_main and sys.stdout.isatty()
        bar = tqdm(total=len(self.sampler), initial=self.position.step, desc=f"Ep {epoch + 1}",
                   disable=not show_bar, leave=False, dynamic_ncols=True)
        for images, labels, _camids, indices in self.loader:
            stepped, stats = self.train_step(images, labels, indices)
            self.position.step += 1
            self.position.global_step += 1
            bar.update(1)
            if stepped:
                count += 1
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
            elif self.is_main:
                print(f"Ep {epoch + 1}, step {self.position.step}: non-finite loss or gradients, step skipped "
                      f"(loss scale now {self.stepper.scale:g})")
            if self.stepper.consecutive_skips >= self.max_nonfinite_steps:
                bar.close()
                raise BpmError(
                    f"training stopped: {self.stepper.consecutive_skips} consecutive non-finite steps at epoch "
                    f"{epoch + 1} (try a lower --base_lr or --opt-level O0); " + self._checkpoint_left()
                )
            values = {**stats, "lr": lr, "loss_scale": self.stepper.scale}
            if self.is_main and logger is not None and stepped:
                logger.log_step(self.position.global_step, epoch + 1, values)
            if self.is_main and self.cfg.steps_per_log > 0 and self.position.step % self.cfg.steps_per_log == 0:
                bar.write(f"Ep {epoch + 1}, step {self.position.step}/{len(self.sampler)}, {time.time() - start:.1f}s, "
                          f"{format_stats(stats)}")
            if self.ckpt_every_steps and self.position.step % self.ckpt_every_steps == 0:
                self.save_checkpoint()
            if (self._stop_agreed if self.dist.enabled else self._stop_signal is not None):
                bar.close()
                self.save_checkpoint()
                name = signal.Signals(self._stop_signal or signal.SIGTERM).name  # a peer's signal: SIGTERM
                raise TrainingInterrupted(
                    f"stopped by signal {name} at epoch {epoch + 1}, step "
                    f"{self.position.step}; checkpoint saved to {self.ckpt_path}; resume with --resume true"
                )
        bar.close()
        if self.is_main:
            means = {k: v / max(count, 1) for k, v in totals.items()}
            # The running sums of the steps before a resume are not in the checkpoint: say what is averaged.
            partial = f", means of steps {first_step}-{len(self.sampler)} only (resumed mid-epoch)" \
                if first_step > 1 else ""
            print(f"Ep {epoch + 1}, {time.time() - start:.1f}s, lr {lr:.3g}, {format_stats(means)}{partial}"
                  + (f", skipped {steps_to_run - count}" if count < steps_to_run else ""))

    def _maybe_validate(self, logger: RunLogger | None) -> None:
        every = self.cfg.epochs_per_val
        if self.validator is None or not math.isfinite(every) or every <= 0:
            return
        if self.position.epoch % int(every) != 0:
            return
        mAP, rank1 = self.validator(self.bare_model)
        self.position.scores = {"mAP": mAP, "Rank1": rank1, "epoch": self.position.epoch}
        if self.is_main:
            print(f"Validation after epoch {self.position.epoch}: [mAP: {mAP:.2%}], [cmc1: {rank1:.2%}]")
            if logger is not None:
                logger.log_validation(self.position.global_step, self.position.epoch, mAP, rank1)


# The original's short names for its triplet statistics; fractions print as percentages.
_SHORT_NAMES = {"precision": "prec", "satisfy_margin": "sm", "dist_ap": "d_ap", "dist_an": "d_an"}
_FRACTIONS = {"precision", "satisfy_margin", "id_accuracy"}


def format_stats(stats: dict[str, float]) -> str:
    """``loss 0.1234, prec 95.00%, ...`` for whatever statistics the criterion returned."""
    return ", ".join(f"{_SHORT_NAMES.get(k, k)} {v:.2%}" if k in _FRACTIONS else f"{_SHORT_NAMES.get(k, k)} {v:.4f}"
                     for k, v in stats.items())


def _wrap_for_ranks(
    model: torch.nn.Module, policy: PrecisionPolicy, ctx: DistContext, sync_bn: bool
) -> torch.nn.Module:
    """Cast/move the model for the policy and, with several ranks, wrap it in DDP.

    SyncBatchNorm replaces the BatchNorm modules, so it comes before ``prepare_model`` (whose
    FP32-BatchNorm hooks must sit on the final modules). DDP comes last: it averages the
    model's own (half-precision at O2) gradients, which the stepper then copies to the FP32
    master weights, and broadcasts rank 0's initial weights to every rank.
    """
    if ctx.enabled and sync_bn:
        if policy.device.type != "cuda":
            raise BpmError("--sync_bn true: SyncBatchNorm runs on CUDA devices only (nccl); on CPU each rank keeps "
                           "its own BatchNorm statistics, drop --sync_bn")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = policy.prepare_model(model)
    if not ctx.enabled:
        return model
    device_ids = [policy.device.index] if policy.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so model init and augmentation repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
