"""What the distillation terms compare the student with, for each sample of a batch.

Cached (the default): the teacher's embedding of the *un-augmented* image, flip-averaged: the mean
of the normalised embeddings of the image and of its mirror image, normalised again. The student
sees its usual augmented view (random mirror, pad-and-crop, crop, erasing as the recipe says)
against that fixed target. Mirroring does not change who a person is, so the flip average is the
target for both orientations (and is the teacher's own flip test-time augmentation); the other
augmentations are small and the target is what the student should output for the person.

Per step (``--teacher_per_step true``): the teacher embeds the student's exact augmented batch, at a
teacher forward pass per step. bench/distill_cost.py measures what that costs against the cache.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bpm.distill.cache import TeacherFeatures
from bpm.distill.teacher import Teacher


class CachedTargets:
    """Teacher targets looked up by dataset index (the loader yields each sample's index)."""

    def __init__(self, features: TeacherFeatures, paths: Sequence[str]) -> None:
        rows = features.rows(paths)
        plain = F.normalize(torch.from_numpy(np.asarray(features.plain[rows], np.float32)), dim=1)
        flipped = F.normalize(torch.from_numpy(np.asarray(features.flipped[rows], np.float32)), dim=1)
        self.table = F.normalize(plain + flipped, dim=1)
        self.dim = int(self.table.shape[1])

    def __call__(self, indices: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.table[indices.long().cpu()]


class PerStepTargets:
    """The teacher run on the student's augmented batch.

    The batch arrives normalised for the student (``mean``/``std`` of its input spec); it is
    turned back into 0..1 pixels, which the teacher then prepares as its own input spec says.
    """

    def __init__(self, teacher: Teacher, mean: Sequence[float], std: Sequence[float]) -> None:
        self.teacher = teacher
        self.dim = teacher.dim
        self._mean = torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, indices: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        unit = images.detach().float().cpu() * self._std + self._mean
        return F.normalize(torch.from_numpy(self.teacher.embed_unit(unit.clamp(0, 1))), dim=1)
