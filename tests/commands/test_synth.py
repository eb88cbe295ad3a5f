"""``bpm synth``: the demo world from the command line; flags left out follow the flags given."""
from __future__ import annotations

import json

import pytest
from synthetic_helpers import parsed

from bpm.commands import synth as synth_command
from bpm.commands.synth import main
from bpm.data.synthetic import WorldConfig
from bpm.errors import BpmError


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--num_train_ids", "3", "--num_test_ids", "2", "--num_cameras", "2",
            "--max_cameras_per_id", "2", "--num_distractors", "1", "--num_junk", "1",
            "--image_height", "32", "--image_width", "16", "--seed", "5", "--quiet"]
    assert main(args) == 0
    meta = json.loads((out / "world.json").read_text())
    assert meta["config"]["num_train_ids"] == 3 and meta["config"]["seed"] == 5
    assert len({pid for pid, _ in parsed(out, "bounding_box_train")}) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # --quiet prints nothing (Reliability III finding 10)
    assert main(args[:-1]) == 0  # without --quiet: the world's folder, for scripts
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
    assert capsys.readouterr().out == ""  # --quiet
