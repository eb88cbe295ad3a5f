"""The machine a benchmark or CI run is on: a dict for ``--json`` files and one line to print.

``python -m bpm.machine`` prints the line, so a failure or a figure can be tied to a machine.
Nothing here imports torch or onnxruntime: versions come from the installed packages'
metadata, so the line is quick and still prints when one of them is broken.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

# ISA extensions that decide which kernels run (SIMD sort, INT8 dot products, bf16, AMX), in the
# spelling of Linux's /proc/cpuinfo; aarch64 calls the dot-product extension "asimddp"
# ("dotprod" elsewhere).
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "dotprod",
)
PACKAGES = ("torch", "torchvision", "onnxruntime")
#: Caps the instruction set oneDNN's kernels use (``AVX2``, ``AVX512_CORE_VNNI``, ...). OpenVINO's CPU
#: plugin and torch's CPU convolutions run on oneDNN and honour it; ONNX Runtime's kernels (MLAS) do
#: not. It lets a newer CPU compute what an older one would (its speed, and its INT8 saturation), so a
#: figure measured under a cap must say so.
ISA_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"


def isa_cap(environ: dict[str, str] | None = None) -> str | None:
    """The oneDNN instruction-set cap in force (upper case, e.g. ``AVX2``), or None."""
    value = (os.environ if environ is None else environ).get(ISA_CAP_VARIABLE, "").strip()
    return value.upper() or None


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """CPU model and the ``ISA_FLAGS`` present, from the text of /proc/cpuinfo.

    x86 lists ``model name`` and ``flags``; aarch64 lists ``Features`` and often no model
    name, in which case the model is given as ``CPU implementer``/``CPU part``.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key and key not in fields:
            fields[key] = value.strip()
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
    if not model and "cpu implementer" in fields:
        model = f"CPU implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return model or None, [flag for flag in ISA_FLAGS if flag in present]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, architecture, ISA flags, logical cores, Python and package versions, load.

    Keys: ``cpu`` (str), ``arch`` (str), ``isa`` (list of str), ``logical_cores`` (int),
    ``python`` (str), ``torch``/``torchvision``/``onnxruntime`` (str, None if not installed),
    ``load_avg`` (list of three floats: 1, 5, 15 minutes; None where unavailable), and
    ``onednn_max_cpu_isa`` (:func:`isa_cap`) only where a cap is set.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as handle:
            model, isa = parse_cpuinfo(handle.read())
    except OSError:
        model, isa = None, []
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    info: dict[str, Any] = {
        "cpu": model or platform.processor() or platform.machine() or "unknown",
        "arch": platform.machine() or "unknown",
        "isa": isa,
        "logical_cores": os.cpu_count() or 1,
        "python": platform.python_version(),
    }
    for package in PACKAGES:
        info[package] = _version(package)
    info["load_avg"] = load
    cap = isa_cap()
    if cap:
        info["onednn_max_cpu_isa"] = cap
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line, e.g. ``machine: Intel(R) Xeon(R) ... | x86_64 | 2 logical cores | isa avx2 ...``
    (of ``describe_machine()`` when ``info`` is not given)."""
    if info is None:
        info = describe_machine()
    isa = " ".join(info.get("isa") or []) or "none"
    load = info.get("load_avg")
    parts = [
        f"machine: {info.get('cpu')}",
        str(info.get("arch")),
        f"{info.get('logical_cores')} logical cores",
        f"isa {isa}",
        f"python {info.get('python')}",
    ]
    parts += [f"{package} {info.get(package) or 'not installed'}" for package in PACKAGES]
    parts.append("load " + (" ".join(f"{x:.2f}" for x in load) if load else "unknown"))
    if info.get("onednn_max_cpu_isa"):
        parts.append(f"oneDNN capped at {info['onednn_max_cpu_isa']} (OpenVINO, torch; not ONNX Runtime)")
    return " | ".join(parts)


def print_machine() -> dict[str, Any]:
    """Print the one-line description (flushed, for benchmark logs) and return the dict."""
    info = describe_machine()
    print(machine_line(info), flush=True)
    return info


def main() -> int:
    print_machine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
