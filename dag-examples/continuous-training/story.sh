#!/usr/bin/env bash
# The continuous-training story, end to end on this machine: loomd and one
# agent (`loom up`) in a temporary folder, the churn-train and churn-monitor
# pipelines, and data arriving over time:
#   1. first labelled data             -> the first model, champion v1
#   2. normal new data                 -> retrain; the gate keeps or replaces
#   3. production data like before     -> the monitor finds no drift
#   4. the world shifts                -> drift -> retrain -> a new champion
# It prints what happened at each step from `loom status`, `loom events`
# and `loom models`, and exits 0 when the story ended with the retrained
# model as champion. Usage: story.sh [BUILD_DIR] (default build/release,
# else build/debug). Needs Debian's python3-sklearn (scripts/install-deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-}
if [ -z "$build" ]; then
  build=$root/build/release
  [ -x "$build/loom" ] || build=$root/build/debug
fi
export PATH="$build:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/loom-story-XXXXXX")
export LOOM_HOME=$work/home
unset LOOM_SERVER
data=$work/data
mkdir -p "$data/labelled" "$data/scoring" "$work/pipelines"
up_pid=
cleanup() {
  [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

py=/usr/bin/python3
step() { printf '\n=== %s\n' "$*"; }
gen() { "$py" "$here/generate.py" "$@"; }
runs() { loom --json status --pipeline "$1" --limit 100 |
           "$py" -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))'; }
# Waits until PIPELINE has N runs and none is in flight; prints the newest.
wait_runs() {
  local p=$1 n=$2 i
  for i in $(seq 1 600); do
    if [ "$(runs "$p")" -ge "$n" ] &&
       loom --json status --pipeline "$p" --limit 1 |
         "$py" -c 'import json,sys; r=json.load(sys.stdin)["runs"][0]; sys.exit(r["state"] in ("queued","running"))'; then
      loom status "$(loom --json status --pipeline "$p" --limit 1 |
        "$py" -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["id"])')"
      return 0
    fi
    sleep 0.2
  done
  echo "story: $p did not reach $n runs" >&2
  return 1
}

cp "$here"/*.py "$here/monitor.sh" "$work/pipelines/"
for f in train monitor; do
  sed "s|@DATA@|$data|g" "$here/$f.yaml.in" > "$work/pipelines/$f.yaml"
done

step "loomd and one agent (loom up), state in $LOOM_HOME"
loom up --home "$LOOM_HOME" --http 127.0.0.1:0 --bind 'tcp://127.0.0.1:*' --slots 2 \
  > "$work/up.log" 2>&1 &
up_pid=$!
for i in $(seq 1 100); do loom agents >/dev/null 2>&1 && break; sleep 0.1; done
loom agents
loom submit "$work/pipelines/train.yaml"
loom submit "$work/pipelines/monitor.yaml"
loom triggers

step "1. The first labelled data arrives: two batches -> the first model"
gen "$data/labelled/batch-0001.csv" --seed 1
gen "$data/labelled/batch-0002.csv" --seed 2
wait_runs churn-train 1
loom models show churn

step "2. Normal new data: retrain; the gate compares with the champion"
gen "$data/labelled/batch-0003.csv" --seed 3
gen "$data/labelled/batch-0004.csv" --seed 4
wait_runs churn-train 2
loom models show churn

step "3. Production data like the training data: the monitor finds no drift"
gen "$data/scoring/day-1.csv" --seed 11 --no-label
loom run churn-monitor --wait --logs | tail -n 20
loom events --name churn-drift

step "4. The world shifts: new labelled data, and production data that drifts"
gen "$data/labelled/batch-0005.csv" --seed 5 --shift
gen "$data/scoring/day-2.csv" --seed 12 --shift --no-label
loom run churn-monitor --wait --logs | tail -n 20
loom events --name churn-drift
wait_runs churn-train 3
loom triggers --explain churn-train

step "The registry now"
loom models show churn
loom models
champion=$(loom --json models show churn | "$py" -c 'import json,sys; m=json.load(sys.stdin); print(m["aliases"].get("champion", 0), m["versions"][0]["version"], m["versions"][0]["run_id"])')
read -r champ latest latest_run <<<"$champion"
drift_run=$(loom --json status --pipeline churn-train --limit 1 |
  "$py" -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["id"])')
echo "champion v$champ; latest v$latest from run $latest_run; the drift-started run is $drift_run"
loom lineage "$latest_run:register:model.pkl"
if [ "$champ" = "$latest" ] && [ "$latest_run" = "$drift_run" ]; then
  echo "story: the drift-triggered retrain became the champion"
else
  echo "story: the drift-triggered retrain did not become the champion" >&2
  exit 1
fi
