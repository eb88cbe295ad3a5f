"""Unlabelled crops: listed from a folder, appended to each batch reproducibly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpm.data.sampler import PKBatchSampler
from bpm.distill.extra import UNLABELLED, ExtraBatchSampler, extra_records
from bpm.errors import BpmError


def test_extra_records_are_every_image_under_the_folder_unlabelled(tmp_path):
    (tmp_path / "cam1").mkdir()
    for name in ("cam1/b.jpg", "a.png", "notes.txt"):
        path = tmp_path / name
        if name.endswith("txt"):
            path.write_text("x")
        else:
            Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(path)
    records = extra_records(tmp_path)
    assert [r.path for r in records] == [str(tmp_path / "a.png"), str(tmp_path / "cam1" / "b.jpg")]
    assert all(r.pid == UNLABELLED for r in records)


def test_extra_folder_errors(tmp_path):
    with pytest.raises(BpmError, match="is not a folder"):
        extra_records(tmp_path / "missing")
    with pytest.raises(BpmError, match="no images"):
        extra_records(tmp_path)


def test_each_batch_gets_extras_reproducibly_and_a_resume_sees_the_same():
    labels = [i // 3 for i in range(30)]  # 10 identities, 3 images each

    def sampler():
        return ExtraBatchSampler(PKBatchSampler(labels, 4, 2, seed=5), offset=30, count=7, per_batch=3)

    full = sampler()
    full.set_epoch(1)
    batches = list(full)
    assert len(batches) == len(full) and all(len(b) == 4 * 2 + 3 for b in batches)
    assert all(30 <= i < 37 for b in batches for i, _ in b[8:]) and all(i < 30 for b in batches for i, _ in b[:8])
    resumed = sampler()
    resumed.set_epoch(1, start_step=1)
    assert list(resumed) == batches[1:]
    other = sampler()
    other.seed = 6
    other.set_epoch(1)
    assert list(other) != batches
