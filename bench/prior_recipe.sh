#!/bin/bash
# One train-prior recipe's r_ISM against training time (issue 23), the input of bench/prior_recipes.py.
#
# usage: bench/prior_recipe.sh OUT_DIR DATASET SEGMENTS STEPS_PER_SEGMENT PROMPT [train-prior flags...]
#
# Trains OUT_DIR/prior in SEGMENTS segments of STEPS_PER_SEGMENT steps (each segment resumes the last: the same
# weights as one straight run of that many steps), copies the loadable folder after segment k to OUT_DIR/seg_k and
# runs the doctor on it (t = 100,300,450, ISM and SDS, 3 seeds, PROMPT's test views in DATASET). Wall seconds and
# the load average before and after each stage go to OUT_DIR/segments.jsonl. THREADS sets OMP_NUM_THREADS (1).
#   bench/prior_recipe.sh runs/recipes/v_pred assets/demo 6 355 "a red toy car"
#   bench/prior_recipe.sh runs/recipes/eps assets/demo 2 355 "a red toy car" --prediction epsilon
set -euo pipefail
out=$1; dataset=$2; segments=$3; per=$4; prompt=$5; shift 5
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-1}
py=${PYTHON:-python}
load() { cut -d' ' -f1-3 /proc/loadavg; }
for k in $(seq 1 "$segments"); do
  [ -f "$out/seg_$k/doctor/doctor.json" ] && continue
  if [ -f "$out/prior/training_state.pt" ]; then extra=(--resume); else extra=(--overwrite "$@"); fi
  start=$(date +%s); load0=$(load)
  "$py" -m lucid_app train-prior --dataset "$dataset" --out "$out/prior" --steps $((k * per)) --sample-steps 0 \
      "${extra[@]}" > "$out/train_$k.json" 2> "$out/train_$k.log"
  end=$(date +%s)
  rm -rf "$out/seg_$k"; mkdir -p "$out/seg_$k"
  cp -r "$out"/prior/{unet,text_encoder,tokenizer,scheduler,lucid_prior.json,loss.jsonl} "$out/seg_$k/"
  echo "{\"segment\": $k, \"steps\": $((k * per)), \"wall_s\": $((end - start)), \"threads\": $OMP_NUM_THREADS, \"load_before\": \"$load0\", \"load_after\": \"$(load)\"}" >> "$out/segments.jsonl"
  start=$(date +%s)
  "$py" -m lucid_app doctor --model "$out/seg_$k" --prompt "$prompt" --dataset "$dataset" --methods ism,sds \
      --out "$out/seg_$k/doctor" > "$out/doctor_$k.json" 2> "$out/doctor_$k.log"
  echo "{\"segment\": $k, \"doctor_wall_s\": $(( $(date +%s) - start )), \"load\": \"$(load)\"}" >> "$out/segments.jsonl"
done
