"""The synthetic demo world: Market layout, determinism, reuse and atomic writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from bpm.data import synthetic
from bpm.commands import synth as synth_command
from bpm.commands.synth import main
from bpm.data.synthetic import SPLITS, WorldConfig, ensure_world, generate_world, world_matches
from bpm.errors import BpmError

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
TINY = WorldConfig(num_train_ids=6, num_test_ids=5, num_cameras=3, max_cameras_per_id=3,
                   max_images_per_id_camera=3, multi_query_per_id_camera=2, num_distractors=4,
                   num_junk=3, image_height=48, image_width=24, seed=3)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def parsed(root: Path, split: str) -> list[tuple[int, int]]:
    out = []
    for p in (root / split).iterdir():
        m = NAME.match(p.name)
        assert m, p.name
        out.append((int(m.group(1)), int(m.group(2))))
    return out


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


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--num_train_ids", "3", "--num_test_ids", "2", "--num_cameras", "2",
            "--max_cameras_per_id", "2", "--num_distractors", "1", "--num_junk", "1",
            "--image_height", "32", "--image_width", "16", "--seed", "5", "--quiet"]
    assert main(args) == 0
    meta = json.loads((out / "world.json").read_text())
    assert meta["config"]["num_train_ids"] == 3 and meta["config"]["seed"] == 5
    assert len({pid for pid, _ in parsed(out, "bounding_box_train")}) == 3
    assert capsys.readouterr().out.strip() == str(out)


def _cli_config(*flags: str) -> WorldConfig:
    return synth_command.config_from_args(synth_command.build_parser().parse_args(["--out", "x", *flags]))


def test_command_line_defaults_follow_the_flags_they_depend_on():
    assert _cli_config() == WorldConfig()  # the demo world is unchanged
    assert _cli_config("--num_cameras", "3").max_cameras_per_id == 3
    assert _cli_config("--num_cameras", "2").max_cameras_per_id == 2
    assert _cli_config("--min_cameras_per_id", "6").max_cameras_per_id == 6
    queries = _cli_config("--queries_per_id_camera", "3")
    assert (queries.min_images_per_id_camera, queries.max_images_per_id_camera) == (4, 5)
    assert _cli_config("--queries_per_id_camera", "5").max_images_per_id_camera == 6
    assert _cli_config("--min_images_per_id_camera", "7").max_images_per_id_camera == 7
    assert _cli_config("--num_train_ids", "9950").num_test_ids == 49
    # Values given on the command line are kept, and a contradiction between them is still refused.
    assert _cli_config("--num_cameras", "4", "--max_cameras_per_id", "3").max_cameras_per_id == 3
    with pytest.raises(BpmError, match="--max_cameras_per_id"):
        _cli_config("--num_cameras", "3", "--max_cameras_per_id", "5")


def test_command_line_with_three_cameras(tmp_path, capsys):
    from bpm.cli import main as bpm_main

    out = tmp_path / "three"
    assert bpm_main(["synth", "--out", str(out), "--num_cameras", "3", "--num_train_ids", "2", "--num_test_ids", "2",
                 "--num_distractors", "0", "--num_junk", "0", "--image_height", "32", "--image_width", "16",
                 "--quiet"]) == 0
    meta = json.loads((out / "world.json").read_text())
    assert meta["config"]["num_cameras"] == 3 and meta["config"]["max_cameras_per_id"] == 3
    assert {cam for _, cam in parsed(out, "bounding_box_test")} <= {1, 2, 3}
    assert capsys.readouterr().out.strip() == str(out)
