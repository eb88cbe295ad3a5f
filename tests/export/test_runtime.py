"""ONNX Runtime sessions as bpm makes them, and timing one graph against another."""
from pathlib import Path

import torch

from bpm.export.onnx import OnnxSpec, export_onnx
from bpm.export.runtime import speed_ratio
from bpm.models.onnx_graph import session_options


def test_sessions_do_not_spin_and_use_the_requested_threads():
    """Spinning threads hold the cores the next batch's decoding needs (bench/infer_speed.py: INT8 1.4x vs 2.3x FP32)."""
    options = session_options(threads=2)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1


def test_speed_ratio_times_the_heavier_graph_as_the_slower(tmp_path):
    """Two graphs of one input spec, one with 16 times the convolution work: the light one is faster by a
    margin no shared machine's noise closes, and a graph against itself is near 1."""
    def graph(name: str, channels: int) -> Path:
        net = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1),
                                  *[torch.nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3)],
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
        return Path(export_onnx(net, str(tmp_path / name), OnnxSpec("mobilenetV2", (64, 32))))

    light, heavy = graph("light.onnx", 8), graph("heavy.onnx", 64)
    assert speed_ratio(light, heavy, threads=1, batch=8, rounds=3) < 0.5
    assert 0.3 < speed_ratio(light, light, threads=1, batch=8, rounds=3) < 3.0
