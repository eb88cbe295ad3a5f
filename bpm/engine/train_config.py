"""Typed training settings: what the trainer needs, made from the command line at the command boundary.

Tests and benchmarks build a :class:`TrainConfig` directly (every field has the original's
default); the commands make one from their parsed switches with :func:`bpm.cli.switches.train_config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bpm.losses.combine import LossConfig


@dataclass(frozen=True)
class TrainConfig:
    """The trainer's settings. The input size is the model group's (:class:`bpm.cli.switches.ModelSettings`);
    the trainer gets it as the model's :class:`~bpm.models.input_spec.InputSpec`."""

    total_epochs: int = 300
    recipe: str = ""  # the --recipe name, recorded in checkpoints (bpm.models.meta)
    ids_per_batch: int = 32
    ims_per_id: int = 4
    sampler_epoch: str = "ids"  # "ids": one pass over identities (the original); "images": over images
    # optimisation
    optimizer: str = "adam"
    base_lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_type: str = "exp"
    exp_decay_at_epoch: int = 151
    staircase_decay_at_epochs: tuple[int, ...] = (101, 201)
    staircase_decay_multiply_factor: float = 0.1
    warmup_epochs: int = 0
    warmup_factor: float = 0.1
    # augmentation
    mirror: bool = True
    crop_prob: float = 0.1
    crop_ratio: float = 1.0
    pad_crop: int = 0
    erase: bool = True
    erase_prob: float = 0.2
    # criterion
    loss: LossConfig = field(default_factory=LossConfig)
    # distillation (bpm.distill): the teacher file, its input spec where the file has none, where its
    # embeddings are cached (default: <exp_dir>/teacher_cache), unlabelled crops and how many per batch
    # (0: half the labelled batch), and whether the teacher runs on each augmented batch instead
    teacher: str = ""
    teacher_input: str = ""
    teacher_cache: str = ""
    teacher_per_step: bool = False
    distill_extra: str = ""
    distill_extra_per_batch: int = 0
    # loop
    seed: int | None = None  # None: a fresh random data order
    workers: int = 2
    steps_per_log: int = 20
    epochs_per_val: float = 1e10
    ckpt_every_steps: int = 0
    max_nonfinite_steps: int = 50
    sync_bn: bool = False
    gather_for_mining: bool = False
