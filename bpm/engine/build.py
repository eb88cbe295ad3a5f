"""The training factory: the parts a :class:`~bpm.engine.trainer.Trainer` runs, built from the run's settings.

Why a factory: the trainer only runs the loop and checkpoints it; which criterion, optimizer,
sampler, transforms and loader a run uses, and whether the model is wrapped for several ranks, is
decided here, from the typed settings, the model, the training records and the command's
distributed context. Building them runs every start-up check that depends on the data (e.g.
``--ids_per_batch`` against the training identities) and writes nothing.

The order of construction is the one the trainer always used (criterion, model cast and wrap,
optimizer, sampler, transforms, loader), so a seeded run draws the same random numbers and trains
bit-identically.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from bpm.data.loader import train_loader
from bpm.data.records import ImageRecord
from bpm.data.sampler import PKBatchSampler
from bpm.data.transforms import train_transform
from bpm.distill.extra import ExtraBatchSampler
from bpm.distill.targets import CachedTargets, PerStepTargets
from bpm.distributed import DistContext, broadcast_object
from bpm.engine.train_config import TrainConfig
from bpm.engine.optimizers import build_optimizer
from bpm.errors import BpmError
from bpm.losses.combine import ReidCriterion
from bpm.models.input_spec import InputSpec
from bpm.precision import PrecisionPolicy, PrecisionStepper


@dataclass
class TrainingParts:
    """Everything the training loop uses, built by :func:`build_training`.

    ``model`` is cast for the precision policy (and DDP-wrapped with several ranks); ``classes``
    maps each training identity to its classifier output; ``distill`` gives the teacher's target of
    each sample (by dataset index: the training records, then the unlabelled extra records).
    """

    cfg: TrainConfig
    policy: PrecisionPolicy
    ctx: DistContext
    model: torch.nn.Module
    stepper: PrecisionStepper
    criterion: Callable
    optimizer: torch.optim.Optimizer
    classes: dict[int, int]
    sampler: PKBatchSampler | ExtraBatchSampler
    sampler_seed: int
    loader: torch.utils.data.DataLoader
    input_spec: InputSpec
    distill: CachedTargets | PerStepTargets | None = None


def class_index(train_records: Sequence[ImageRecord]) -> dict[int, int]:
    """Training identity -> classifier output 0..C-1, sorted, so every rank agrees (the ID head's
    classes are global under DDP) and a resumed run maps identities as before."""
    return {pid: index for index, pid in enumerate(sorted({r.pid for r in train_records}))}


def build_training(cfg: TrainConfig, policy: PrecisionPolicy, model: torch.nn.Module,
                   train_records: Sequence[ImageRecord], ctx: DistContext | None = None, *,
                   input_spec: InputSpec, criterion: Callable | None = None, distill: CachedTargets | PerStepTargets | None = None,
                   extra_records: Sequence[ImageRecord] = ()) -> TrainingParts:
    """The parts of a training run.

    Args:
        cfg: the typed training settings.
        policy: the precision policy (device, casts, autocast, loss scaling).
        model: the network, not yet cast or wrapped (its ``feature_dim`` sizes the loss terms).
        train_records: the labelled training images.
        ctx: the command's distributed context (default: one process on the policy's device).
        input_spec: what the model takes (size, normalisation: the model group's input size,
            :func:`~bpm.models.input_spec.input_spec_of_model`), for the training transform and the
            checkpoint's record; required, so no caller trains at a size it did not choose.
        criterion: a ready criterion (tests); default: :class:`ReidCriterion` over ``cfg.loss``.
        distill: the teacher's targets (:mod:`bpm.distill`), when a loss term needs them.
        extra_records: unlabelled crops (``--distill_extra``) appended to every batch.

    Returns:
        The :class:`TrainingParts`.
    """
    ctx = ctx if ctx is not None else DistContext(device=policy.device)
    classes = class_index(train_records)
    if criterion is None:
        criterion = ReidCriterion(cfg.loss, len(classes), getattr(model, "feature_dim", 0),
                                  distill.dim if distill is not None else 0)
    criterion = criterion.to(policy.device) if isinstance(criterion, torch.nn.Module) else criterion
    wrapped = wrap_for_ranks(model, policy, ctx, cfg.sync_bn)
    stepper = PrecisionStepper(policy, wrapped)
    # The criterion's own parameters (the distillation projection head, FP32) train with the model.
    own = [p for p in criterion.parameters() if p.requires_grad] if isinstance(criterion, torch.nn.Module) else []
    optimizer = build_optimizer(cfg, [*stepper.optimizer_params(), *own])
    sampler_seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    sampler_seed = int(broadcast_object(ctx, sampler_seed))  # one data order for all ranks
    sampler: PKBatchSampler | ExtraBatchSampler = PKBatchSampler(
        [r.pid for r in train_records], cfg.ids_per_batch, cfg.ims_per_id, sampler_seed, ctx.rank, ctx.world_size,
        cfg.sampler_epoch,
    )
    if extra_records:
        per_batch = cfg.distill_extra_per_batch or max(1, cfg.ids_per_batch * cfg.ims_per_id // 2)
        sampler = ExtraBatchSampler(sampler, len(train_records), len(extra_records), per_batch)
    transform = train_transform(input_spec, cfg.mirror, cfg.crop_prob, cfg.crop_ratio, cfg.erase, cfg.erase_prob,
                                cfg.pad_crop)
    loader = train_loader([*train_records, *extra_records], transform, sampler, cfg.workers)
    return TrainingParts(cfg, policy, ctx, wrapped, stepper, criterion, optimizer, classes, sampler, sampler_seed,
                         loader, input_spec, distill)


def wrap_for_ranks(model: torch.nn.Module, policy: PrecisionPolicy, ctx: DistContext, sync_bn: bool) -> torch.nn.Module:
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
