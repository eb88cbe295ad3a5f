#!/usr/bin/env bash
# Mixed-precision check for a CUDA machine, in three parts:
#  1. training: every opt-level for a few steps on both backbones at 256x128 (images/s, peak GPU
#     memory, loss, our-trainer/bare-loop ratios). Target from the paper: MobileNet-V2 O2 >= 1.75x O0.
#  2. inference: images/s per opt-level and the cosine of each level's features with FP32's.
#  3. the command line on CUDA: synthetic world, `bpm train` at O2 (FP16 + GradScaler), a resumed
#     continuation, then `bpm test` of the checkpoint at O3 and at O0 (mAPs should agree).
#
#   pip install --no-deps -e .   # once; needs torch, torchvision, numpy, pillow, tqdm already there
#   bash bench/gpu_check.sh            # default: 20 timed steps, batch 32x4 (the original's P x K)
#   STEPS=10 IDS=16 EPOCHS=20 bash bench/gpu_check.sh
#   PARTS=cli EPOCHS=20 bash bench/gpu_check.sh    # only part 3 (PARTS: any of train,infer,cli)
#   NETS=mobilenetV2,efficientnet_lite0 bash bench/gpu_check.sh   # parts 1-2 on these backbones
#
# Works offline; parts 1-2 need no dataset (random images, weights from scratch), part 3 renders
# its own world and needs tensorboardX and h5py like any training run. O0 is true FP32 (TF32 off), so O2/O0 is measured against real FP32 as on the paper's GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
IDS=${IDS:-32}
IMS=${IMS:-4}
EPOCHS=${EPOCHS:-40}
PARTS=${PARTS:-train,infer,cli}
NETS=${NETS:-mobilenetV2,resnet50,efficientnet_lite0}
part() { [[ ",$PARTS," == *",$1,"* ]]; }

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

if part train; then
"$PY" bench/train_speed.py --device cuda --nets "$NETS" --levels O0,O1,O2,O3 \
  --size 256,128 --ids "$IDS" --ims "$IMS" --steps "$STEPS" --warmup "$WARMUP" | tee /tmp/bpm_gpu_check.txt

"$PY" - /tmp/bpm_gpu_check.txt <<'PYEOF'
import re, sys
speed = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+(O\d) ours\s+([\d.]+) img/s", line)
    if m:
        speed[(m[1], m[2])] = float(m[3])
for net in sorted({n for n, _ in speed}):
    if (net, "O0") in speed and (net, "O2") in speed:
        ratio = speed[(net, "O2")] / speed[(net, "O0")]
        target = "  (target >= 1.75x: " + ("met" if ratio >= 1.75 else "NOT met") + ")" if net == "mobilenetV2" else ""
        print(f"{net}: O2/O0 training throughput {ratio:.2f}x{target}")
PYEOF

fi

if part infer; then
  echo "== inference per opt-level"
  "$PY" bench/gpu_infer_speed.py --nets "$NETS"
fi

part cli || exit 0
echo "== command line on CUDA: train O2, resume, test O3 / O0"
work=$(mktemp -d)
"$PY" -m bpm synth --out "$work/world" --quiet
common=(-d '(0,)' --dataset synthetic --data_root "$work/world" --net mobilenetV2 --resize_h_w '(96, 48)'
        --workers 4 --set_seed true)
train=("${common[@]}" --opt-level O2 --ids_per_batch 16 --ims_per_id 4 --optimizer sgd --momentum 0.9
       --base_lr 0.03 --exp_decay_at_epoch $((EPOCHS / 2 + 1)) --erase false --crop_prob 0 --steps_per_log 0
       --rerank false --net_pretrained_path none --exp_dir "$work/o2")
start=$(date +%s)
"$PY" -m bpm train "${train[@]}" --total_epochs $((EPOCHS - 10)) --eval_untrained true
cp "$work/o2/results.json" "$work/first_part.json"
"$PY" -m bpm train "${train[@]}" --total_epochs "$EPOCHS" --resume true
echo "train O2 ($EPOCHS epochs, resumed once): $(( $(date +%s) - start )) s"
for level in O3 O0; do
  "$PY" -m bpm test "${common[@]}" --opt-level "$level" --model_weight_file "$work/o2/ckpt.pth" --rerank false \
    --exp_dir "$work/test_$level"
done
"$PY" - "$work" <<'PYEOF'
import json, sys
work = sys.argv[1]
first = json.load(open(f"{work}/first_part.json"))
trained = json.load(open(f"{work}/o2/results.json"))
print(f"O2 training, MobileNet-V2: untrained mAP {first['untrained']['mAP']:.3f}, before resume {first['mAP']:.3f}, "
      f"after resume {trained['mAP']:.3f}")
for level in ("O3", "O0"):
    r = json.load(open(f"{work}/test_{level}/results.json"))
    print(f"bpm test --opt-level {level}: mAP {r['mAP']:.4f}, rank-1 {r['cmc']['1']:.4f}")
PYEOF
