#!/usr/bin/env bash
# Evaluate a weights file the way the original's testMe.sh did: FP16 (O3) inference of FP32 ResNet-50
# weights on all three test sets (combined), with re-ranking.
#   ./testMe.sh WEIGHTS [SWITCHES...]     e.g. ./testMe.sh expt_res/resnet50.pth -d '()' --dataset market1501
# WEIGHTS: a training checkpoint (ckpt.pth) or a weights file (ours or the original's released files).
# Test-only data needs no training images: --dataset folder --data_root D (D holding query/ and gallery/).
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -eq 0 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  [ $# -eq 0 ] && exit 2 || exit 0
fi
weights=$1
shift
make -s venv
exec .venv/bin/python script/experiment/train.py --only_test true -d '(0,)' --dataset combined --net resnet50 \
  --model_weight_file "$weights" --opt-level O3 "$@"
