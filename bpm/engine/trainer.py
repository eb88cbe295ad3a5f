"""The training loop: P x K batches -> model (under the precision policy) -> criterion -> step.

The trainer builds none of its parts: it gets them from :func:`bpm.engine.build.build_training`
(model, criterion, optimizer, sampler, loader, distributed context), plus a run folder and a
validation callback, and logs whatever statistics the criterion returns. It owns checkpointing,
so everything needed to resume exactly (model, optimizer, scaler and master weights, criterion
buffers, epoch and step, every RNG state, the sampler seed) lives in one atomic file.
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
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from bpm.distributed import gather_for_mining, mean_over_ranks
from bpm.engine.build import TrainingParts
from bpm.engine.checkpoint import (
    CKPT_NAME, atomic_torch_save, load_checkpoint, resumable_state_dicts, rng_state, set_rng_state,
)
from bpm.engine.resume_check import apply_to_optimizer, check_resume
from bpm.engine.logging import RunLogger
from bpm.engine.lr_schedule import lr_at_epoch, set_lr
from bpm.errors import BpmError
from bpm.models.meta import file_meta
from bpm.models.reid import ReidOutput
from bpm.models.weights import load_model_weights_from_state

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


def _as_output(out: torch.Tensor | ReidOutput) -> ReidOutput:
    """Models without neck or head (and plain test networks) may return a bare feature tensor."""
    return out if isinstance(out, ReidOutput) else ReidOutput(out, out, None)


class Trainer:
    def __init__(self, parts: TrainingParts, exp_dir: Path, validator: Validator | None = None) -> None:
        """``parts``: what :func:`bpm.engine.build.build_training` made; ``exp_dir``: where the checkpoint goes;
        ``validator``: (mAP, rank-1) of the model, called every ``epochs_per_val`` epochs."""
        self.cfg = parts.cfg
        self.input_spec = parts.input_spec
        self.policy = parts.policy
        self.dist = parts.ctx
        self.rank, self.world_size = parts.ctx.rank, parts.ctx.world_size
        self.is_main = parts.ctx.is_main
        self.exp_dir = Path(exp_dir)
        self.gather_for_mining = self.cfg.gather_for_mining and self.dist.enabled
        self.classes = parts.classes
        self._class_of = torch.full((max(self.classes, default=0) + 1,), -1, dtype=torch.long)
        for pid, index in self.classes.items():
            self._class_of[pid] = index
        self.distill = parts.distill
        self.criterion = parts.criterion
        self.model = parts.model
        self.stepper = parts.stepper
        self.optimizer = parts.optimizer
        self.validator = validator
        self.position = Position()
        self.sampler_seed = parts.sampler_seed
        self.sampler = parts.sampler
        self.loader = parts.loader
        self.ckpt_path = self.exp_dir / CKPT_NAME
        self.max_nonfinite_steps = self.cfg.max_nonfinite_steps
        self.ckpt_every_steps = self.cfg.ckpt_every_steps
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
        # keep this run's fused kernels, which O3 needs (see bpm.engine.optimizers).
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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so model init and augmentation repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
