#!/usr/bin/env bash
# One-command GPU check (issue 16), for a machine with one CUDA GPU and the requirements installed
# (`pip install -r requirements.txt`; this script installs nothing). Budget: about 8 minutes on a recent GPU.
#   1. the GPU-marked tests;
#   2. `bench step` at full size: SD 2.1 base architecture with random weights, 512², fp16, 4 views, 1M Gaussians
#      (the memory target: <= 10 GB peak VRAM, so a 12 GB card runs the paper preset), 3 steps;
#   3. the paper preset for 200 steps with random full-size weights (s/step, peak VRAM, finite losses);
#   4. gsplat vs our torch renderer on the same scene (forward + backward, their ratio).
# Prints one JSON object as the last line of stdout; progress and logs go to stderr and to $OUT_DIR.
# Usage: bash bench/gpu_check.sh [OUT_DIR]   (default: a new folder under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
OUT_DIR="${1:-$(mktemp -d /tmp/lucid_gpu_check.XXXXXX)}"
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: bench/gpu_check.sh needs one GPU")'

start=$(date +%s)
echo "[gpu_check] 1/4 GPU tests" >&2
set +e
timeout 150 "$PY" -m pytest -q -m gpu tests > "$OUT_DIR/gpu_tests.txt" 2>&1
tests_rc=$?
set -e
tail -n 3 "$OUT_DIR/gpu_tests.txt" >&2

echo "[gpu_check] 2/4 bench step: sd21-base, 512², fp16, 4 views, 1M Gaussians" >&2
timeout 150 "$PY" -m lucid_app bench step --arch sd21-base --size 512 --views 4 --device cuda --dtype float16 \
    --gaussians 1000000 --steps 3 > "$OUT_DIR/step.json" 2> "$OUT_DIR/step.log"

echo "[gpu_check] 3/4 paper preset, 200 steps, random full-size weights" >&2
timeout 240 "$PY" -m lucid_app bench step --arch sd21-base --size 512 --views 4 --device cuda --dtype float16 \
    --steps 200 > "$OUT_DIR/paper200.json" 2> "$OUT_DIR/paper200.log"

echo "[gpu_check] 4/4 renderers: gsplat vs torch" >&2
timeout 90 "$PY" bench/render.py --device cuda --gaussians 100000 --views 4 --size 512 --repeats 5 \
    --variants torch,gsplat > "$OUT_DIR/render.json" 2> "$OUT_DIR/render.log"

"$PY" - "$OUT_DIR" "$tests_rc" "$start" <<'PYEOF'
import json, sys, time
from pathlib import Path

out, tests_rc, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
last = lambda name: json.loads((out / name).read_text().strip().splitlines()[-1])  # noqa: E731
step, paper, render = last("step.json"), last("paper200.json"), last("render.json")
import torch

report = {
    "command": "gpu_check", "gpu": torch.cuda.get_device_name(0),
    "gpu_tests": {"exit_code": tests_rc, "summary": (out / "gpu_tests.txt").read_text().strip().splitlines()[-1:]},
    "bench_step": {k: step[k] for k in ("s_per_step", "stage_s", "unet_evaluations_per_step",
                                        "peak_cuda_allocated_gb", "dtype", "losses_finite")}
    | {"vram_target_10gb_met": step["peak_cuda_allocated_gb"] <= 10.0},
    "paper_200_steps": {k: paper[k] for k in ("s_per_step", "stage_s", "peak_cuda_allocated_gb", "losses_finite")},
    "render_100k_512px_4views": {
        "torch_ms": render["torch"]["total_ms_median"], "gsplat_ms": render["gsplat"]["total_ms_median"],
        "torch_over_gsplat": round(render["torch"]["total_ms_median"] / render["gsplat"]["total_ms_median"], 2),
    },
    "wall_s": round(time.time() - start), "out_dir": str(out),
}
print(json.dumps(report))
PYEOF
