#!/usr/bin/env bash
# Mixed-precision check for a CUDA machine: every opt-level for a few training steps on both
# backbones at 256x128, printing images/s, peak GPU memory (torch.cuda.max_memory_allocated) and
# the loss, plus our-trainer/bare-loop ratios. Target from the paper: MobileNet-V2 O2 >= 1.75x O0.
#
#   pip install --no-deps -e .   # once; needs torch, torchvision, numpy, pillow, tqdm already there
#   bash bench/gpu_check.sh            # default: 20 timed steps, batch 32x4 (the original's P x K)
#   STEPS=10 IDS=16 bash bench/gpu_check.sh
#
# Works offline; does not need tensorboardX, h5py or any dataset (random images, weights from
# scratch). O0 is true FP32 (TF32 off), so O2/O0 is measured against real FP32 as on the paper's GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
IDS=${IDS:-32}
IMS=${IMS:-4}

"$PY" - <<'PYEOF'
import importlib, sys
missing = [m for m in ("torch", "torchvision", "numpy", "PIL", "tqdm", "bpm") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python modules {missing}; install them (bpm: pip install --no-deps -e .)")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False; this script needs a CUDA GPU")
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, {p.total_memory / 2**30:.0f} GiB, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PYEOF

"$PY" bench/train_speed.py --device cuda --nets mobilenetV2,resnet50 --levels O0,O1,O2,O3 \
  --size 256,128 --ids "$IDS" --ims "$IMS" --steps "$STEPS" --warmup "$WARMUP" | tee /tmp/bpm_gpu_check.txt

"$PY" - /tmp/bpm_gpu_check.txt <<'PYEOF'
import re, sys
speed = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+(O\d) ours\s+([\d.]+) img/s", line)
    if m:
        speed[(m[1], m[2])] = float(m[3])
for net in ("mobilenetV2", "resnet50"):
    if (net, "O0") in speed and (net, "O2") in speed:
        ratio = speed[(net, "O2")] / speed[(net, "O0")]
        target = "  (target >= 1.75x: " + ("met" if ratio >= 1.75 else "NOT met") + ")" if net == "mobilenetV2" else ""
        print(f"{net}: O2/O0 training throughput {ratio:.2f}x{target}")
PYEOF
