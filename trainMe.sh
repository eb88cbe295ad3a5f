#!/usr/bin/env bash
# Train (and evaluate) a re-ID model.
#   ./trainMe.sh                 the demo: synthetic world -> MobileNet-V2 on the CPU -> untrained vs trained mAP
#   ./trainMe.sh SWITCHES...     the original's recipe (MobileNet-V2, O2, combined trainval, 300 epochs,
#                                validation every 5 epochs, erase/crop off) with SWITCHES appended,
#                                e.g. ./trainMe.sh -d '(0,)'   or   ./trainMe.sh -d '()' --dataset market1501
# Environment: BPM_DATA (dataset root, default ~/Dataset), DEMO_EPOCHS (demo length).
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
make -s venv
PY=.venv/bin/python

if [ $# -eq 0 ]; then
  start=$(date +%s)
  exp_dir=expt_res/demo_synthetic_mobilenetV2
  rm -f "$exp_dir/ckpt.pth"  # the demo always starts from scratch
  "$PY" -m bpm synth --out data/synthetic
  # BoT as published (erasing, triplet + ID loss), the recipe the demo was measured with; bpm train's
  # default, softmax (no erasing, ID loss only), was chosen on real pedestrians (README, "Accuracy on real data").
  "$PY" -m bpm train -d '()' --dataset synthetic --data_root data/synthetic --net mobilenetV2 --opt-level O0 \
    --recipe bot --sampler_epoch ids --resize_h_w '(96, 48)' --ids_per_batch 16 --ims_per_id 4 --optimizer sgd \
    --momentum 0.9 --base_lr 0.03 --total_epochs "${DEMO_EPOCHS:-60}" --workers 1 --test_flip true \
    --steps_per_log 0 --rerank false --eval_untrained true --set_seed true --net_pretrained_path none \
    --exp_dir "$exp_dir"
  "$PY" - "$exp_dir/results.json" "$start" <<'PYEOF'
import json, sys, time
r = json.load(open(sys.argv[1]))
print(f"\nDemo finished in {time.time() - int(sys.argv[2]):.0f} s")
print(f"  untrained MobileNet-V2: mAP {r['untrained']['mAP']:.3f}, rank-1 {r['untrained']['cmc']['1']:.3f}")
print(f"  trained MobileNet-V2:   mAP {r['mAP']:.3f}, rank-1 {r['cmc']['1']:.3f}")
PYEOF
  exit 0
fi

exec "$PY" script/experiment/train.py \
  -d '(0,)' --dataset combined --trainset_part trainval --net mobilenetV2 --opt-level O2 \
  --total_epochs 300 --epochs_per_val 5 --erase false --crop_prob 0 "$@"
