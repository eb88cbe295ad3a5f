"""bpm.models.openvino_graph without OpenVINO installed: what a oneDNN cap changes (precision, saturation).

The compiled-model behaviour (an IR run under a real cap) is tested in tests/export/test_openvino.py.
"""
import pytest

from bpm.models.openvino_graph import NO_BF16_CAPS, capped_precision, openvino_int8_saturates


@pytest.mark.parametrize("cap", ["SSE41", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"])
def test_a_cap_below_bf16_runs_fp32(cap):
    assert cap in NO_BF16_CAPS and capped_precision(cap) == "fp32"


@pytest.mark.parametrize("cap", [None, "AVX512_CORE_BF16", "AVX10_1_512_AMX", "DEFAULT"])
def test_no_cap_or_a_cap_with_bf16_leaves_the_cpu_default(cap):
    assert capped_precision(cap) is None


def test_openvino_int8_saturates_on_a_cpu_without_vnni_or_under_a_cap_without_it():
    assert openvino_int8_saturates(True, None) and openvino_int8_saturates(False, "AVX2")
    assert openvino_int8_saturates(False, "AVX512_CORE")
    assert not openvino_int8_saturates(False, None) and not openvino_int8_saturates(False, "AVX512_CORE_VNNI")
