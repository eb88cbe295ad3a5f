"""bpm.machine: the dict every benchmark prints and stores, its one-line form, cpuinfo parsing."""
import json
import subprocess
import sys

from bpm import machine
from bpm.machine import ISA_FLAGS, describe_machine, machine_line, parse_cpuinfo

# Trimmed /proc/cpuinfo samples (two processors each, where the real files list every one).
AVX2_ONLY = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2
bugs\t\t: spectre_v1

processor\t: 1
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2
"""

AVX512_VNNI = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""

AARCH64 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""

SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""


def test_avx2_only_sample():
    model, flags = parse_cpuinfo(AVX2_ONLY)
    assert model == "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"
    assert flags == ["avx2"]


def test_avx512_vnni_sample():
    model, flags = parse_cpuinfo(AVX512_VNNI)
    assert model == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    assert flags == ["avx2", "avx512f", "avx512_vnni"]  # avx512_vnni is not avx_vnni


def test_aarch64_sample_has_dotprod_and_a_model():
    model, flags = parse_cpuinfo(AARCH64)
    assert model == "CPU implementer 0x41 part 0xd0c"
    assert flags == ["asimddp"]


def test_amx_sample_lists_flags_in_fixed_order():
    _, flags = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert flags == ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    assert flags == [f for f in ISA_FLAGS if f in flags]


def test_empty_or_odd_text():
    assert parse_cpuinfo("") == (None, [])
    assert parse_cpuinfo("no colon here\n: value without key\nflags:\n") == (None, [])


def test_dict_keys_and_types():
    info = describe_machine()
    assert set(info) == {"cpu", "arch", "isa", "logical_cores", "python", "torch", "torchvision", "onnxruntime",
                         "load_avg"}
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert isinstance(info["arch"], str)
    assert isinstance(info["isa"], list) and all(f in ISA_FLAGS for f in info["isa"])
    assert isinstance(info["logical_cores"], int) and info["logical_cores"] >= 1
    assert info["python"] == "%d.%d.%d" % sys.version_info[:3]
    for package in ("torch", "torchvision", "onnxruntime"):
        assert info[package] is None or isinstance(info[package], str)
    assert info["torch"]  # installed with the package
    assert info["load_avg"] is None or (len(info["load_avg"]) == 3 and all(isinstance(x, float) for x in info["load_avg"]))
    json.dumps(info)  # goes into --json files as is


def test_dict_from_a_given_cpuinfo_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(AVX512_VNNI)
    info = describe_machine(str(path))
    assert info["cpu"] == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    assert info["isa"] == ["avx2", "avx512f", "avx512_vnni"]
    missing = describe_machine(str(tmp_path / "absent"))
    assert missing["isa"] == [] and isinstance(missing["cpu"], str)


def test_one_line_format():
    info = {"cpu": "Test CPU", "arch": "x86_64", "isa": ["avx2", "avx512f"], "logical_cores": 8,
            "python": "3.11.7", "torch": "2.4.0", "torchvision": None, "onnxruntime": "1.20.0",
            "load_avg": [0.5, 1.25, 2.0]}
    line = machine_line(info)
    assert line == ("machine: Test CPU | x86_64 | 8 logical cores | isa avx2 avx512f | python 3.11.7 | "
                    "torch 2.4.0 | torchvision not installed | onnxruntime 1.20.0 | load 0.50 1.25 2.00")
    assert "\n" not in line
    bare = machine_line(dict(info, isa=[], load_avg=None))
    assert "isa none" in bare and bare.endswith("load unknown")
    assert machine_line().startswith("machine: ")


def test_a_onednn_cap_is_read_from_the_environment_and_named_in_the_line(monkeypatch):
    assert machine.isa_cap({}) is None and machine.isa_cap({machine.ISA_CAP_VARIABLE: " "}) is None
    assert machine.isa_cap({machine.ISA_CAP_VARIABLE: "avx2"}) == "AVX2"
    monkeypatch.delenv(machine.ISA_CAP_VARIABLE, raising=False)
    assert "onednn_max_cpu_isa" not in describe_machine() and "oneDNN" not in machine_line()
    monkeypatch.setenv(machine.ISA_CAP_VARIABLE, "avx512_core")
    info = describe_machine()
    assert info["onednn_max_cpu_isa"] == "AVX512_CORE"
    assert machine_line(info).endswith("| oneDNN capped at AVX512_CORE (OpenVINO, torch; not ONNX Runtime)")


def test_print_machine_prints_the_line(capsys):
    info = machine.print_machine()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("machine: ")
    assert info["python"] in out


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "bpm.machine"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("machine: ") and proc.stdout.count("\n") == 1
