"""bpm.models.openvino_graph without OpenVINO installed: the precision chosen under a oneDNN cap.

The compiled-model behaviour (an IR run under a real cap) is tested in tests/export/test_openvino.py.
"""
import pytest

from bpm.models.openvino_graph import NO_BF16_CAPS, capped_precision


@pytest.mark.parametrize("cap", ["SSE41", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"])
def test_a_cap_below_bf16_runs_fp32(cap):
    assert cap in NO_BF16_CAPS and capped_precision(cap) == "fp32"


@pytest.mark.parametrize("cap", [None, "AVX512_CORE_BF16", "AVX10_1_512_AMX", "DEFAULT"])
def test_no_cap_or_a_cap_with_bf16_leaves_the_cpu_default(cap):
    assert capped_precision(cap) is None
