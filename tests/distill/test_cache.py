"""The teacher features cache: one file per teacher hash and input spec, each image keyed by path, size and time."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from bpm.distill.cache import image_key, teacher_features, teacher_key
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


@pytest.mark.parametrize("change", ["teacher", "spec"])
def test_another_teacher_or_spec_gets_a_file_of_its_own(images, tmp_path, change):
    teacher = CountingTeacher()
    before = teacher_features(teacher, images, tmp_path / "cache")
    teacher = CountingTeacher(sha256="b" * 64, scale=2.0) if change == "teacher" else CountingTeacher(spec="8x4,bgr,unit")
    after = teacher_features(teacher, images, tmp_path / "cache")
    assert after.computed == len(images) and after.key != before.key
    assert len(list((tmp_path / "cache").iterdir())) == 2
    if change == "teacher":
        assert not np.allclose(after.plain, before.plain)


def test_only_the_images_the_cache_lacks_are_computed(images, tmp_path):
    teacher = CountingTeacher()
    first = teacher_features(teacher, images[:3], tmp_path / "cache")
    more = teacher_features(teacher, images, tmp_path / "cache")  # two images added, e.g. --distill_extra
    assert first.computed == 3 and more.computed == 2
    fresh = teacher_features(CountingTeacher(), images, tmp_path / "fresh")
    np.testing.assert_array_equal(more.plain, fresh.plain)
    np.testing.assert_array_equal(more.flipped, fresh.flipped)
    fewer = teacher_features(teacher, images[1:4], tmp_path / "cache")  # a subset: all read back
    assert fewer.loaded and np.array_equal(fewer.plain, fresh.plain[1:4])


def test_an_image_changed_on_disk_is_computed_again(images, tmp_path):
    teacher = CountingTeacher()
    before = teacher_features(teacher, images, tmp_path / "cache")
    Image.fromarray(np.full((8, 4, 3), 200, np.uint8)).save(images[0])
    os.utime(images[0], ns=(1, 10**18))  # a new modification time whatever the clock's resolution
    after = teacher_features(teacher, images, tmp_path / "cache")
    assert after.computed == 1
    assert not np.allclose(after.plain[after.rows([images[0]])], before.plain[before.rows([images[0]])])
    np.testing.assert_array_equal(after.plain[1:], before.plain[1:])
    with np.load(next((tmp_path / "cache").iterdir())) as data:  # the stale row is dropped, not kept beside
        assert len(data["image_keys"]) == len(images)


def test_a_cache_file_with_another_key_is_not_read(images, tmp_path):
    teacher = CountingTeacher()
    first = teacher_features(teacher, images, tmp_path / "cache")
    path = next((tmp_path / "cache").iterdir())
    keys = [image_key(p) for p in images]
    np.savez(path, key=np.array("something else"), image_keys=np.array(keys), plain=first.plain * 0,
             flipped=first.flipped * 0)
    again = teacher_features(teacher, images, tmp_path / "cache")
    assert again.computed == len(images) and np.array_equal(again.plain, first.plain)


def test_a_damaged_cache_file_is_computed_again(images, tmp_path):
    teacher = CountingTeacher()
    first = teacher_features(teacher, images, tmp_path / "cache")
    path = next((tmp_path / "cache").iterdir())
    path.write_bytes(path.read_bytes()[:100])
    again = teacher_features(teacher, images, tmp_path / "cache")
    assert again.computed == len(images) and np.array_equal(again.plain, first.plain)
    assert teacher_features(teacher, images, tmp_path / "cache").loaded


def test_targets_are_the_normalised_flip_average_in_record_order(images, tmp_path):
    features = teacher_features(CountingTeacher(), images, tmp_path / "cache")
    order = [images[3], images[0], images[3]]
    targets = CachedTargets(features, order)
    rows = features.rows(order)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    want = unit(unit(features.plain[rows]) + unit(features.flipped[rows]))
    got = targets(__import__("torch").tensor([2, 1]), None).numpy()
    np.testing.assert_allclose(got, want[[2, 1]], rtol=1e-6)
    assert targets.dim == 3 and teacher_key(CountingTeacher()) == features.key
