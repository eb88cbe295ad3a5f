"""ONNX Runtime sessions as bpm makes them."""
from bpm.models.onnx_graph import session_options


def test_sessions_do_not_spin_and_use_the_requested_threads():
    """Spinning threads hold the cores the next batch's decoding needs (bench/infer_speed.py: INT8 1.4x vs 2.3x FP32)."""
    options = session_options(threads=2)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
