#!/usr/bin/env bash
# tests/gpu/check.sh BIN_DIR: loom on a machine with a real NVIDIA GPU.
#
# Not part of ctest (CI has no GPU): run it by hand where `nvidia-smi` works
# and `python3` has PyTorch with CUDA, e.g.
#   cmake --preset release && cmake --build --preset release
#   bash tests/gpu/check.sh build/release
# It checks that the agent finds the GPUs through NVML, and through
# nvidia-smi when NVML cannot be loaded, with the models, memory and UUIDs
# nvidia-smi reports; that a task asking for a GPU sees exactly that one
# (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER=PCI_BUS_ID) and really computes on
# it; that a task asking for none sees none; that two exclusive tasks never
# hold one GPU at once while shared ones do; and that `loom agents` reports the
# GPU's memory in use while a task holds some. Prints PASS/FAIL lines and
# exits 1 if any check failed.
set -uo pipefail
bin=$(cd "${1:?usage: check.sh BIN_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
loom="$bin/loom"
export LOOM_HOME
LOOM_HOME=$(mktemp -d "${TMPDIR:-/tmp}/loom-gpu.XXXXXX")
failed=0
check() { # NAME CONDITION...
    local name=$1
    shift
    if "$@"; then echo "PASS $name"; else echo "FAIL $name"; failed=1; fi
}
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT

echo "== nvidia-smi"
nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits |
    tee "$LOOM_HOME/smi.csv"
ngpu=$(wc -l <"$LOOM_HOME/smi.csv")
nvml=$(ldconfig -p | awk '/libnvidia-ml.so.1 /{print $NF; exit}')
[ -n "$nvml" ] || nvml=$(find / -name 'libnvidia-ml.so.1' -not -path '/proc/*' 2>/dev/null | head -1)
echo "NVML library: ${nvml:-none found}"

"$loom" up --home "$LOOM_HOME" --http 127.0.0.1:0 --bind 'tcp://127.0.0.1:*' --slots 4 \
    --name nvml >"$LOOM_HOME/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
    "$loom" agents 2>/dev/null | grep -q connected && break
    sleep 0.05
done
endpoint=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["zmq"])' \
    "$LOOM_HOME/loomd.json" 2>/dev/null || echo "")
echo "agent endpoint: $endpoint"

# A second agent that cannot load NVML: it must fall back to nvidia-smi.
if [ -n "$endpoint" ]; then
    # It joins over CURVE with a one-time token (first line of the output).
    LOOM_JOIN_TOKEN=$("$loom" agents token --name smi | head -1) \
    LOOM_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 "$bin/loom-agent" --server "$endpoint" \
        --name smi --slots 1 --work-dir "$LOOM_HOME/smi-agent" --run-as "$(id -un)" \
        >"$LOOM_HOME/smi-agent.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do
        [ "$("$loom" agents 2>/dev/null | grep -c connected)" -ge 2 ] && break
        sleep 0.05
    done
fi
echo "== loom agents"
"$loom" agents
"$loom" --json agents >"$LOOM_HOME/agents.json"

gpus_match() { # AGENT SOURCE
    python3 - "$LOOM_HOME/agents.json" "$LOOM_HOME/smi.csv" "$1" "$2" <<'PY'
import json, sys
agents = json.load(open(sys.argv[1]))
agents = agents.get("agents", agents) if isinstance(agents, dict) else agents
a = [x for x in agents if x.get("name") == sys.argv[3]]
if not a:
    sys.exit(f"no agent {sys.argv[3]}")
got = a[0].get("gpus") or []
want = [l.split(", ") for l in open(sys.argv[2]).read().splitlines() if l.strip()]
print(f"  {sys.argv[3]} reports ({a[0].get('gpu_source')}): {json.dumps(got)}")
if a[0].get("gpu_source") != sys.argv[4]:
    sys.exit(f"GPUs found through {a[0].get('gpu_source')!r}, expected {sys.argv[4]!r}")
if len(got) != len(want):
    sys.exit(f"{len(got)} GPUs reported, nvidia-smi lists {len(want)}")
for g, (idx, uuid, name, mib) in zip(sorted(got, key=lambda g: g["index"]), want):
    mem = g.get("memory_bytes") or g.get("memory")
    if g["index"] != int(idx) or g.get("model") != name or g.get("uuid") != uuid \
            or int(mem) != int(mib) * 1024 * 1024:
        sys.exit(f"GPU {g} differs from nvidia-smi's {idx}, {uuid}, {name}, {mib} MiB")
PY
}
check "agent 'nvml' reports the GPUs nvidia-smi lists" gpus_match nvml nvml
grep -i 'gpu' "$LOOM_HOME/up.log" | head -5
check "agent 'smi' (NVML unloadable) reports them through nvidia-smi" gpus_match smi nvidia-smi
grep -i 'gpu\|nvml\|nvidia' "$LOOM_HOME/smi-agent.log" | head -5
# Only the NVML agent should take the pipeline's tasks: cordon the other.
"$loom" agents cordon smi >/dev/null

"$loom" submit "$here/gpu.yaml" || failed=1
# Sample the agents while the run goes, to see GPU memory in use reported.
(
    for _ in $(seq 120); do
        "$loom" --json agents >>"$LOOM_HOME/agents-during.jsonl" 2>/dev/null
        echo >>"$LOOM_HOME/agents-during.jsonl"
        sleep 0.5
    done
) &
sampler=$!
echo "== loom run gpu-check --logs"
timeout 300 "$loom" run gpu-check --logs | tee "$LOOM_HOME/run.log"
rc=${PIPESTATUS[0]}
kill "$sampler" 2>/dev/null
check "the gpu-check run succeeded (every task saw exactly its GPUs)" test "$rc" -eq 0

span() { # TASK -> "start end" in ns from its log
    local run
    run=$(awk '/^run [0-9]+ started/{print $2; exit}' "$LOOM_HOME/run.log")
    "$loom" logs "$run" "$1" | awk '/^START /{s=$2} /^END /{e=$2} END{print s, e}'
}
read -r as ae <<<"$(span exclusive_a)"
read -r bs be <<<"$(span exclusive_b)"
read -r cs ce <<<"$(span shared_a)"
read -r ds de <<<"$(span shared_b)"
echo "exclusive_a $as-$ae exclusive_b $bs-$be shared_a $cs-$ce shared_b $ds-$de"
disjoint() { [ -n "$1" ] && [ -n "$3" ] && { [ "$2" -le "$3" ] || [ "$4" -le "$1" ]; }; }
overlap() { [ -n "$1" ] && [ -n "$3" ] && [ "$1" -lt "$4" ] && [ "$3" -lt "$2" ]; }
check "exclusive GPU tasks never computed at the same time" disjoint "$as" "$ae" "$bs" "$be"
check "shared GPU tasks computed on the one GPU at the same time" overlap "$cs" "$ce" "$ds" "$de"

used() {
    python3 - "$LOOM_HOME/agents-during.jsonl" <<'PY'
import json, sys
best = 0
for chunk in open(sys.argv[1]).read().split("\n\n"):
    chunk = chunk.strip()
    if not chunk:
        continue
    try:
        d = json.loads(chunk)
    except ValueError:
        continue
    agents = d.get("agents", d) if isinstance(d, dict) else d
    for a in agents:
        for g in (a.get("usage") or {}).get("gpus") or []:
            for k in ("memory_used_bytes", "used_bytes", "memory_used"):
                if k in g:
                    best = max(best, int(g[k]))
print(f"  most GPU memory in use seen by `loom agents`: {best / 2**30:.2f} GiB")
sys.exit(0 if best >= 2**30 else 1)
PY
}
check "loom agents showed the GPU memory a task held" used

mkdir -p "${OUT:-$LOOM_HOME/out}"
cp "$LOOM_HOME"/{up.log,smi-agent.log,agents.json,run.log} "${OUT:-$LOOM_HOME/out}/" 2>/dev/null
[ $failed -eq 0 ] && echo "ALL GPU CHECKS PASSED" || echo "SOME GPU CHECKS FAILED"
exit $failed
