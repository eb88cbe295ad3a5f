"""TensorBoard: one run per experiment (d_ap/d_an with the other scalars, under the original's
names), the hyper-parameters and final test metrics in the HParams view; mINP printed with mAP."""
from __future__ import annotations

import struct

from tensorboardX.proto import event_pb2

from bpm.commands import train
from train_helpers import train_args


def _events(path):
    """Every Event of a TFRecord event file (length, crc, payload, crc)."""
    data, pos, events = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12:pos + 12 + length])
        events.append(event)
        pos += 12 + length + 4
    return events


def test_one_run_with_original_names_hparams_and_minp(tiny_world, tmp_path, capsys):
    exp = tmp_path / "run"
    args = train_args(tiny_world, exp, "--total_epochs", "1", "--log_to_file", "true", "--steps_per_log", "1")
    assert train.run(args) == 0
    out = capsys.readouterr().out
    single = next(line for line in out.splitlines() if line.startswith("Single Query:"))
    assert single.split("[mAP:")[1].count("%") == 5 and single.endswith("%]") and ", [mINP:" in single

    board = exp / "tensorboard"
    assert not [p for p in board.iterdir() if p.is_dir()], "a sub-run was written"
    tags, plugins = set(), set()
    for path in board.iterdir():
        for event in _events(path):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.metadata.plugin_data.plugin_name:
                    plugins.add(value.metadata.plugin_data.plugin_name)
    assert {"loss", "precision", "satisfy_margin", "average_distance/dist_ap", "average_distance/dist_an"} <= tags
    assert {"hparam/mAP", "hparam/mINP", "hparam/rank1"} <= tags and "hparams" in plugins


def test_hparams_written_in_the_same_second_keep_the_run_scalars(tmp_path, monkeypatch):
    # Event files are named by the second and the host: the HParams writer must not reuse (and
    # truncate) the training writer's file when both open within one second.
    import time

    from bpm.engine.logging import RunLogger, log_hparams

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    logger = RunLogger(tmp_path, tensorboard=True)
    logger.writer.add_scalar("loss", 1.0, 1)
    logger.close()
    log_hparams(tmp_path, {"lr": 0.1}, {"hparam/mAP": 0.5})
    tags = {value.tag for path in (tmp_path / "tensorboard").iterdir() for event in _events(path)
            for value in event.summary.value}
    assert {"loss", "hparam/mAP"} <= tags
