#!/usr/bin/env bash
# The original's rank-list demo: 16 queries, top-10, CUHK03, MobileNet-V2, O0.
# Settings come from the environment; extra flags are passed on and win over them.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: vis_res.sh [-h] [visualize_rank_list.py flags...]
  Draws <exp_dir>/rank_lists/<query>.jpg and index.html (16 queries, top 10).
  Environment (default):
    DATASET    dataset name (cuhk03)          DATA_ROOT  dataset folder ($BPM_DATA/<dataset>)
    NET        mobilenetV2 or resnet50         OPT_LEVEL  O0..O3 (O0)
    WEIGHTS    weights file or checkpoint (<EXP_DIR>/ckpt.pth)
    FEATURES   HDF5 from `bpm test --save_features` (used instead of WEIGHTS when set)
    EXP_DIR    output folder (expt_res/<DATASET>_<NET>_<OPT_LEVEL>_stride1_run1, the training default)
    DEVICES    -d value ('(0,)' when nvidia-smi sees a GPU, else '()')
  Example: DATASET=market1501 WEIGHTS=model.pth ./vis_res.sh --normalize_feature true
USAGE
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$python" ]] || python="python3"

DATASET="${DATASET:-cuhk03}"
NET="${NET:-mobilenetV2}"
OPT_LEVEL="${OPT_LEVEL:-O0}"
EXP_DIR="${EXP_DIR:-expt_res/${DATASET}_${NET}_${OPT_LEVEL}_stride1_run1}"
if [[ -z "${DEVICES:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICES='(0,)'; else DEVICES='()'; fi
fi

args=(-d "$DEVICES" --dataset "$DATASET" --net "$NET" --opt-level "$OPT_LEVEL" --exp_dir "$EXP_DIR"
      --num_queries 16 --rank_list_size 10)
[[ -n "${DATA_ROOT:-}" ]] && args+=(--data_root "$DATA_ROOT")
if [[ -n "${FEATURES:-}" ]]; then
  args+=(--features_file "$FEATURES")
elif [[ -n "${WEIGHTS:-}" ]]; then
  args+=(--model_weight_file "$WEIGHTS")
fi

exec "$python" "$here/script/experiment/visualize_rank_list.py" "${args[@]}" "$@"
