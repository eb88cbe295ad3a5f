"""What ``bpm train`` does for distillation, in its two places: before the run folder is touched
(:func:`open_distillation`: load the teacher, list the unlabelled crops; every mistake is one line)
and when training starts (:func:`distill_targets`: the teacher's targets, cached or per step)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from bpm.data.records import ImageRecord
from bpm.distill.cache import teacher_features
from bpm.distill.extra import extra_records
from bpm.distill.targets import CachedTargets, PerStepTargets
from bpm.distill.teacher import Teacher, open_teacher
from bpm.distributed import DistContext, broadcast_object
from bpm.engine.train_config import TrainConfig
from bpm.models.input_spec import InputSpec


def open_distillation(cfg: TrainConfig, device: str | torch.device = "cpu") -> tuple[Teacher, list[ImageRecord]]:
    """The teacher (loaded and run once on a probe image) and the ``--distill_extra`` records."""
    teacher = open_teacher(cfg.teacher, cfg.teacher_input, device)
    extras = extra_records(cfg.distill_extra) if cfg.distill_extra else []
    print(f"Teacher: {teacher.describe()}" + (f"; {len(extras)} unlabelled crops from {cfg.distill_extra}"
                                               if extras else ""))
    return teacher, extras


def cache_folder(cfg: TrainConfig, exp_dir: str | Path) -> Path:
    return Path(cfg.teacher_cache) if cfg.teacher_cache else Path(exp_dir) / "teacher_cache"


def distill_targets(teacher: Teacher, cfg: TrainConfig, records: Sequence[ImageRecord], exp_dir: str | Path,
                    student_spec: InputSpec, ctx: DistContext | None = None) -> CachedTargets | PerStepTargets:
    """Per-step targets with ``--teacher_per_step`` (the student's batches are undone with
    ``student_spec``'s normalisation); else the cache (rank 0 computes it, the others read it)."""
    if cfg.teacher_per_step:
        print("Teacher targets: the teacher runs on every augmented batch (--teacher_per_step true)")
        return PerStepTargets(teacher, student_spec.mean, student_spec.std)
    paths = [r.path for r in records]
    folder = cache_folder(cfg, exp_dir)
    main = ctx is None or ctx.is_main
    features = teacher_features(teacher, paths, folder) if main else None
    if ctx is not None:
        broadcast_object(ctx, None)  # a barrier: rank 0 has written the cache
    if features is None:
        features = teacher_features(teacher, paths, folder)
    return CachedTargets(features, paths)
