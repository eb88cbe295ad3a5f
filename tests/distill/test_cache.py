"""The teacher features cache: computed once, keyed by teacher hash, input spec and image list."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from bpm.distill.cache import cache_key, teacher_features
from bpm.distill.targets import CachedTargets
from bpm.distill.teacher import Teacher


class CountingTeacher(Teacher):
    """Embeds an image as its mean colour times a seed: cheap, deterministic, and counts its calls."""

    def __init__(self, sha256: str = "a" * 64, spec: str = "8x4,rgb,unit", scale: float = 1.0) -> None:
        super().__init__(__import__("pathlib").Path("fake.onnx"), "fake", sha256, spec, 3)
        self.scale, self.calls = scale, 0

    def embed_images(self, images):
        self.calls += 1
        return np.stack([np.asarray(im, np.float32).mean(axis=(0, 1)) * self.scale + 1 for im in images])


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        pixels[:, :2] = 0  # left half dark: the mirror image differs
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def test_computed_once_then_reused(images, tmp_path):
    teacher = CountingTeacher()
    first = teacher_features(teacher, images, tmp_path / "cache")
    calls = teacher.calls
    again = teacher_features(teacher, list(reversed(images)), tmp_path / "cache")  # order does not matter
    assert not first.loaded and again.loaded and teacher.calls == calls
    np.testing.assert_array_equal(first.plain, again.plain)
    np.testing.assert_array_equal(first.flipped, again.flipped)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"teacher_{first.key[:24]}.npz"]  # no temp file


@pytest.mark.parametrize("change", ["teacher", "spec", "image set", "image content"])
def test_any_change_invalidates_the_cache(images, tmp_path, change):
    teacher = CountingTeacher()
    before = teacher_features(teacher, images, tmp_path / "cache")
    if change == "teacher":
        teacher = CountingTeacher(sha256="b" * 64, scale=2.0)
    elif change == "spec":
        teacher = CountingTeacher(spec="8x4,bgr,unit")
    elif change == "image set":
        images = images[:-1]
    else:
        Image.fromarray(np.full((8, 4, 3), 200, np.uint8)).save(images[0])
        os.utime(images[0], ns=(1, 10**18))  # a new modification time whatever the clock's resolution
    after = teacher_features(teacher, images, tmp_path / "cache")
    assert not after.loaded and after.key != before.key
    if change == "image content":
        assert not np.allclose(after.plain[after.rows([images[0]])], before.plain[before.rows([images[0]])])


def test_a_cache_file_with_another_key_is_not_read(images, tmp_path):
    teacher = CountingTeacher()
    first = teacher_features(teacher, images, tmp_path / "cache")
    path = next((tmp_path / "cache").iterdir())
    np.savez(path, key=np.array("something else"), paths=np.array(images), plain=first.plain * 0,
             flipped=first.flipped * 0)
    again = teacher_features(teacher, images, tmp_path / "cache")
    assert not again.loaded and np.array_equal(again.plain, first.plain)


def test_targets_are_the_normalised_flip_average_in_record_order(images, tmp_path):
    features = teacher_features(CountingTeacher(), images, tmp_path / "cache")
    order = [images[3], images[0], images[3]]
    targets = CachedTargets(features, order)
    rows = features.rows(order)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    want = unit(unit(features.plain[rows]) + unit(features.flipped[rows]))
    got = targets(__import__("torch").tensor([2, 1]), None).numpy()
    np.testing.assert_allclose(got, want[[2, 1]], rtol=1e-6)
    assert targets.dim == 3 and cache_key(CountingTeacher(), images) == features.key
