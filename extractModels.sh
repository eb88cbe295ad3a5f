#!/usr/bin/env bash
# The original's extractModels.sh: training checkpoint -> weights file + ONNX, now with checks.
# Every written file is reloaded (weights) or run in ONNX Runtime (ONNX) and compared with the
# PyTorch model; the script fails if a check fails. Report: <out dir>/export_report.json.
set -euo pipefail

usage() {
  echo "usage: $0 [-h] [-c CKPT] [-n NET] [-o OUT_DIR] [-l OPT_LEVEL] [-s '(H, W)'] [-f FORMATS] [-- extra bpm export flags]"
  echo "  defaults: -c expt_res/mobilenet/ckpt.pth -n mobilenetV2 -o expt_res/mobilenet/export -l O2 -s '(256, 128)'"
  echo "            -f pt,pt16,safetensors,onnx,onnx16 (add onnx_int8 with: -- --dataset market1501 or --calib_images DIR)"
}

CKPT=expt_res/mobilenet/ckpt.pth
NET=mobilenetV2
OUT=expt_res/mobilenet/export
LEVEL=O2
SIZE='(256, 128)'
FORMATS=pt,pt16,safetensors,onnx,onnx16
while getopts "hc:n:o:l:s:f:" opt; do
  case "$opt" in
    h) usage; exit 0 ;;
    c) CKPT=$OPTARG ;;
    n) NET=$OPTARG ;;
    o) OUT=$OPTARG ;;
    l) LEVEL=$OPTARG ;;
    s) SIZE=$OPTARG ;;
    f) FORMATS=$OPTARG ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift

if [ ! -f "$CKPT" ]; then
  echo "error: $CKPT: checkpoint not found (train first, or pass -c)" >&2
  exit 2
fi
BPM=${BPM:-bpm}
command -v "$BPM" >/dev/null 2>&1 || BPM="python -m bpm"
$BPM export --weights "$CKPT" --net "$NET" --out "$OUT" --opt-level "$LEVEL" --resize_h_w "$SIZE" \
  --formats "$FORMATS" "$@"
