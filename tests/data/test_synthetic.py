"""The synthetic demo world: Market layout, determinism, reuse and atomic writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bpm.data import synthetic
from bpm.data.synthetic import SPLITS, WorldConfig, ensure_world, generate_world, world_matches
from bpm.errors import BpmError
from synthetic_helpers import NAME, parsed

TINY = WorldConfig(num_train_ids=6, num_test_ids=5, num_cameras=3, max_cameras_per_id=3,
                   max_images_per_id_camera=3, multi_query_per_id_camera=2, num_distractors=4,
                   num_junk=3, image_height=48, image_width=24, seed=3)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("w") / "world", TINY)


def test_layout_names_and_world_json(world):
    assert sorted(p.name for p in world.iterdir()) == sorted([*SPLITS, "world.json"])
    meta = json.loads((world / "world.json").read_text())
    assert meta["config"]["seed"] == 3
    for split in SPLITS:
        names = [p.name for p in (world / split).iterdir()]
        assert names and all(NAME.match(n) for n in names)
        assert meta["images"][split] == len(names)
        assert all(1 <= cam <= TINY.num_cameras for _, cam in parsed(world, split))


def test_images_have_the_configured_size(world):
    for split in SPLITS:
        for path in list((world / split).iterdir())[:5]:
            with Image.open(path) as im:
                assert im.size == (TINY.image_width, TINY.image_height) and im.mode == "RGB"


def test_identity_splits_junk_and_distractors(world):
    train = {pid for pid, _ in parsed(world, "bounding_box_train")}
    gallery = parsed(world, "bounding_box_test")
    query = parsed(world, "query")
    test = {pid for pid, _ in gallery if pid > 0}
    assert len(train) == TINY.num_train_ids and len(test) == TINY.num_test_ids
    assert not train & test
    assert {pid for pid, _ in query} == test
    assert sum(pid == 0 for pid, _ in gallery) == TINY.num_distractors
    assert sum(pid == -1 for pid, _ in gallery) == TINY.num_junk
    assert all(pid > 0 for pid, _ in parsed(world, "bounding_box_train"))


def test_every_query_has_a_cross_camera_gallery_match(world):
    gallery = set(parsed(world, "bounding_box_test"))
    for pid, cam in parsed(world, "query"):
        assert any(p == pid and c != cam for p, c in gallery)


def test_gt_bbox_is_a_multi_query_set_of_the_queries(world):
    query = set(parsed(world, "query"))
    gt = parsed(world, "gt_bbox")
    assert set(gt) <= query
    assert len(gt) == len(query) * TINY.multi_query_per_id_camera


def test_same_seed_is_byte_identical_and_other_seed_differs(world, tmp_path):
    again = generate_world(tmp_path / "again", TINY)
    assert files(again) == files(world)
    other = generate_world(tmp_path / "other", WorldConfig(**{**TINY.__dict__, "seed": 4}))
    assert files(other) != files(world)


def test_ensure_world_reuses_then_regenerates(tmp_path):
    root = ensure_world(tmp_path / "w", TINY)
    marker = root / "bounding_box_train" / "marker.txt"
    marker.write_text("kept while reused")
    assert ensure_world(root, TINY) == root and marker.exists()
    bigger = WorldConfig(**{**TINY.__dict__, "num_junk": 5})
    assert not world_matches(root, bigger)
    with pytest.raises(BpmError, match="did not write"):  # a user's file is never deleted with the old world
        ensure_world(root, bigger)
    assert marker.exists() and world_matches(root, TINY)
    marker.unlink()
    ensure_world(root, bigger)
    assert world_matches(root, bigger)
    assert sum(pid == -1 for pid, _ in parsed(root, "bounding_box_test")) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_failure_midway_leaves_no_partial_world(tmp_path, monkeypatch):
    real = synthetic._write_jpeg
    calls = []

    def flaky(path, pixels, quality):
        calls.append(path)
        if len(calls) == 10:
            raise OSError("disk full")
        real(path, pixels, quality)

    monkeypatch.setattr(synthetic, "_write_jpeg", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_world(tmp_path / "w", TINY)
    assert list(tmp_path.iterdir()) == []


def test_failed_regeneration_keeps_the_previous_world(tmp_path, monkeypatch):
    root = generate_world(tmp_path / "w", TINY)
    before = files(root)

    def broken(path, pixels, quality):
        raise OSError("interrupted")

    monkeypatch.setattr(synthetic, "_write_jpeg", broken)
    with pytest.raises(OSError):
        generate_world(root, WorldConfig(**{**TINY.__dict__, "seed": 9}))
    assert files(root) == before and world_matches(root, TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_world(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(BpmError, match="not a synthetic world"):
        generate_world(tmp_path / "mine", TINY)
    assert (tmp_path / "mine" / "photo.jpg").exists()


def test_bad_config_is_a_user_error():
    with pytest.raises(BpmError, match="--num_cameras"):
        WorldConfig(num_cameras=1)
    with pytest.raises(BpmError, match="--min_images_per_id_camera"):
        WorldConfig(min_images_per_id_camera=1, queries_per_id_camera=1)
