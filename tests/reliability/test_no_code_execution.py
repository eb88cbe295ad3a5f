"""Tuple-valued switches are parsed without ``eval``: text that would run code is refused unrun."""
from __future__ import annotations

import argparse

import pytest
from _runner import TALLY

from bpm.cli import main
from bpm.cli.switches import parse_tuple


def _attacks(marker) -> list[str]:
    touch = f"__import__('os').system('touch {marker}')"
    return [
        touch,
        f"({touch},)",
        f"(256, 128) if {touch} else ()",
        f"[x for x in (1,) if {touch}]",
        f"(lambda: {touch})()",
        "(9**9**9,)",  # would hang an eval() computing it
        "([0] * 10**9)",
    ]


def test_malicious_tuple_text_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    for text in _attacks(marker):
        TALLY.fault("code in a tuple switch")
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tuple(text)
    assert not marker.exists()
    assert parse_tuple("(256, 128)") == (256, 128) and parse_tuple("()") == () and parse_tuple("(0,)") == (0,)


@pytest.mark.parametrize("flag", ["--resize_h_w", "-d", "--staircase_decay_at_epochs"])
def test_malicious_tuple_switch_stops_the_command_line(tmp_path, capsys, flag):
    marker = tmp_path / "pwned"
    with pytest.raises(SystemExit) as raised:
        main(["train", flag, f"__import__('os').system('touch {marker}')", "--exp_dir", str(tmp_path / "e")])
    assert raised.value.code == 2
    assert flag in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "e").exists()
