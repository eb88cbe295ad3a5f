"""StreamMirror: console output mirrored into the run folder only inside its ``with`` block."""
from __future__ import annotations

import sys

import pytest

from bpm.engine.logging import StreamMirror


def test_streams_are_mirrored_inside_and_restored_after_an_exception(tmp_path, capsys):
    before = sys.stdout, sys.stderr
    mirror = StreamMirror(tmp_path)
    assert (sys.stdout, sys.stderr) == before  # constructing changes nothing
    with pytest.raises(RuntimeError), mirror:
        print("to the console and the file")
        print("an error line", file=sys.stderr)
        raise RuntimeError("a failing run")
    assert (sys.stdout, sys.stderr) == before
    [out] = tmp_path.glob("stdout_*.txt")
    [err] = tmp_path.glob("stderr_*.txt")
    assert out.read_text() == "to the console and the file\n"
    assert err.read_text() == "an error line\n"
    assert "to the console and the file" in capsys.readouterr().out
    print("after the block")
    assert "after the block" not in out.read_text()


def test_disabled_mirror_writes_no_files_and_keeps_the_streams(tmp_path):
    before = sys.stdout, sys.stderr
    with StreamMirror(tmp_path, enabled=False):
        assert (sys.stdout, sys.stderr) == before
        print("console only")
    assert not list(tmp_path.iterdir())
