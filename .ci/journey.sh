#!/usr/bin/env bash
# The user's journey, as the README tells it, run by CI after the install-and-test block (same venv):
#   1. the quick start block, verbatim, from the clone root (relative paths: runs/smoke/...);
#   2. the same config from another directory with a relative run_dir and an external redis-server as store.url;
#   3. the quick pipeline bench block, verbatim, from the clone root (its JSON checked by .ci/check_bench.py);
#   4. the `ray job submit --working-dir .` block, verbatim, from the clone root against a `ray start --head`
#      cluster with token auth (outputs land under $BEZIER_DISTILL_HOME, as the README says).
# Each step checks that the files the README promises are there.
set -euo pipefail
cd "$(dirname "$0")/.."
CLONE=$PWD
WORK=$(mktemp -d /tmp/journey.XXXXXX)
block() { awk -v m="<!-- ci: $1 -->" '$0 == m {f=1; next} f && /^```/ {n++; if (n==2) exit; next} f && n==1' README.md; }
need() { for f in "$@"; do [ -s "$f" ] || { echo "journey: missing $f" >&2; exit 1; }; done; }
elapsed() { echo "journey: $1 took $(( $(date +%s) - $2 ))s"; }
cleanup() {
  [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null || true
  [ -n "${RAY_STARTED:-}" ] && RAY_ADDRESS= ray stop --force >/dev/null 2>&1 || true
}
trap cleanup EXIT

# a new user has no remembered student-step check: the quick start must take the real step (the test suite
# before it passed the same settings into the shared cache)
rm -rf "${BEZIER_DISTILL_CACHE:-$HOME/.cache/bezier-distill}/step-checks"
quick=$(block quick-start); [ -n "$quick" ] || { echo "README has no quick-start block" >&2; exit 1; }
echo "== 1. quick start, from $CLONE:"; echo "$quick"
t=$(date +%s); bash -euxo pipefail -c "$quick"; elapsed "quick start" "$t"
need runs/smoke/report.json runs/smoke/samples.png runs/smoke/student/model.safetensors runs/smoke/student_eval.json \
     runs/smoke/student_grid.png
python - <<'PY'
import json
r = json.load(open("runs/smoke/report.json"))
assert [row["steps"] for row in r["quality"]["student"]] == [1, 2], r["quality"]["student"]
assert r["production"]["store"]["produced"] == r["production"]["store"]["acknowledged"] == 512
PY

echo "== 2. from another directory ($WORK/elsewhere), relative run_dir, external redis-server with a password"
PORT=$(python -c "from guide_store.embedded import free_port; print(free_port())")
mkdir -p "$WORK/elsewhere" "$WORK/redis"
"$(python -c 'from guide_store.embedded import find_redis_server; print(find_redis_server())')" --port "$PORT" \
  --bind 127.0.0.1 --requirepass journey-pw --dir "$WORK/redis" --appendonly yes --save "" --daemonize no \
  > "$WORK/redis/log" 2>&1 & REDIS_PID=$!
t=$(date +%s)
(cd "$WORK/elsewhere" && bezier-distill run "$CLONE/configs/smoke.yaml" --no-progress \
   --set "store.url=redis://:journey-pw@127.0.0.1:$PORT/0")
elapsed "external store run" "$t"
need "$WORK/elsewhere/runs/smoke/report.json" "$WORK/elsewhere/runs/smoke/student/model.safetensors"
if grep -rl journey-pw "$WORK/elsewhere/runs/smoke" --include='*.json' --include='*.yaml'; then
  echo "journey: the store password was written to the files above" >&2; exit 1
fi
kill "$REDIS_PID"; REDIS_PID=

bench=$(block bench); [ -n "$bench" ] || { echo "README has no bench block" >&2; exit 1; }
echo "== 3. the quick pipeline bench, from $CLONE:"; echo "$bench"
t=$(date +%s); bash -euxo pipefail -c "$bench"; elapsed "quick pipeline bench" "$t"
python .ci/check_bench.py runs/bench-quick.json

echo "== 4. ray job submit --working-dir . to a token-auth cluster (its head started in $WORK, not the clone)"
export RAY_AUTH_MODE=token BEZIER_DISTILL_HOME="$WORK/home"  # the head's environment: the job inherits it
ray get-auth-token --generate >/dev/null  # a token for this head, whether or not an earlier local Ray made one
ports=$(python -c "from guide_store.embedded import free_ports; print(*free_ports(8))")
read -r GCS DASH P1 P2 P3 P4 P5 P6 <<< "$ports"
(cd "$WORK" && ray start --head --port="$GCS" --dashboard-port="$DASH" --include-dashboard=true --num-cpus=4 \
  --disable-usage-stats --temp-dir=/tmp/rj-ci --node-manager-port="$P1" --object-manager-port="$P2" \
  --runtime-env-agent-port="$P3" --dashboard-agent-grpc-port="$P4" --dashboard-agent-listen-port="$P5" \
  --ray-client-server-port="$P6") > "$WORK/ray-start.log" 2>&1 || { RAY_STARTED=1; cat "$WORK/ray-start.log"; exit 1; }
RAY_STARTED=1  # cleanup runs `ray stop --force`: CI runs alone on its machine
export RAY_ADDRESS="http://127.0.0.1:$DASH"
up=
for _ in $(seq 60); do ray job list >/dev/null 2>&1 && { up=1; break; }; sleep 2; done  # the job API comes up after the head
[ -n "$up" ] || { echo "journey: the job API of the head did not come up" >&2; tail -50 "$WORK/ray-start.log"; exit 1; }
submit=$(block ray-job); [ -n "$submit" ] || { echo "README has no ray-job block" >&2; exit 1; }
echo "$submit"
t=$(date +%s); bash -euxo pipefail -c "$submit"; elapsed "ray job submit" "$t"
need "$BEZIER_DISTILL_HOME/runs/smoke/report.json" "$BEZIER_DISTILL_HOME/runs/smoke/student/model.safetensors"
echo "journey: all steps passed"
