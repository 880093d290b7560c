#!/usr/bin/env bash
# The GPU proof of the user's journey, for a lent GPU machine (never part of CI): run a config with its
# defaults, unchanged (default configs/digits.yaml), sample the GPU's busy share with nvidia-smi meanwhile,
# and leave the report, the log and the samples under $OUT.
#   GPU_BUNDLE=DIR bash .ci/gpu-check.sh [CONFIG]      # DIR: an offline bundle of this project's packages
#                                                      # with a setup.sh; without GPU_BUNDLE the current env
# The image's TORCH_CUDA_ARCH_LIST (9.0a on some Hopper images) is left as it is on purpose: the student
# needs no DeepSpeed op build, so it must not matter.
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/digits.yaml}
OUT=${OUT:-$(mktemp -d)}
if [ -n "${GPU_BUNDLE:-}" ]; then . "$GPU_BUNDLE/setup.sh" || { echo "bundle setup failed" >&2; exit 1; }; fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export BEZIER_DISTILL_HOME=${BEZIER_DISTILL_HOME:-$PWD}
echo "config $CONFIG; TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-unset}; out $OUT" | tee "$OUT/summary.txt"
python3 -m cluster.cli doctor "$CONFIG" 2>&1 | tee "$OUT/doctor.txt"
sampler=
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$OUT/gpu_util.csv" 2>/dev/null & sampler=$!
fi
start=$(date +%s)
python3 -m cluster.cli run "$CONFIG" --no-progress > "$OUT/run.log" 2>&1
rc=$?
wall=$(( $(date +%s) - start ))
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
name=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$CONFIG")
run_dir=$(python3 -c "from cluster.config import load_config; print(load_config('$CONFIG').run_path)")
for f in report.json samples.png student_loss.png metrics.jsonl; do cp "$run_dir/$f" "$OUT/" 2>/dev/null; done
python3 - "$OUT" "$rc" "$wall" <<'PY' | tee -a "$OUT/summary.txt"
import csv, json, sys
from pathlib import Path
out, rc, wall = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"run exit code {rc}, wall {wall} s")
util = out / "gpu_util.csv"
if util.is_file():
    rows = [r for r in csv.reader(util.open()) if len(r) >= 3]
    busy = [float(r[1]) for r in rows]
    if busy:
        print(f"GPU busy: mean {sum(busy) / len(busy):.1f}% over {len(busy)} samples; "
              f"share of samples > 0%: {sum(b > 0 for b in busy) / len(busy):.2f}; max memory {max(float(r[2]) for r in rows):.0f} MiB")
else:
    print("no nvidia-smi: no GPU busy figures")
report = out / "report.json"
if report.is_file():
    r = json.loads(report.read_text())
    print("timings:", json.dumps(r.get("timings")))
    print("stages:", json.dumps(r.get("stages")))
    for row in r.get("quality", {}).get("student", []):
        print("student", json.dumps(row))
PY
exit "$rc"
