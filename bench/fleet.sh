#!/usr/bin/env bash
# The simulated-fleet benchmark: builds the release preset, starts a real
# loomd in a temporary folder (127.0.0.1 only, ports the OS picks), runs
# loom-bench-fleet against it — 1,000 simulated agents and a run of 100,000
# instant tasks by default — prints the Markdown table for
# docs/benchmarks.md, then stops loomd and removes the folder.
#
# usage: bash bench/fleet.sh [--sync normal|full] [--perf] [--loomd-arg ARG]...
#                            [--no-build] [SIMULATOR OPTIONS]
#   --sync MODE       loomd's --sync (default normal)
#   --perf            profile loomd with `perf record` meanwhile and print where
#                     it spent its time, over the whole run and between the
#                     first Dispatch and the last completion (PERF_DATA=FILE
#                     keeps perf.data)
#   --loomd-arg ARG   one more argument for loomd (e.g. --agent-timeout 60s)
#   --no-build        use the binaries already in $LOOM_BUILD_DIR
#                     (default build/release)
# LOOMD_WRAPPER="valgrind --tool=massif ..." runs loomd under a tool.
# Simulator options (loom-bench-fleet --help): --agents N, --tasks N,
# --log-bytes N, --heartbeat-ms N, --hold-ms N, --foreach literal|params,
# --timeline. While developing: bash bench/fleet.sh --agents 100 --tasks 10000
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LOOM_BUILD_DIR:-build/release}
sync=normal
perf=0
do_build=1
sim_args=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --sync)
        sync=$2
        shift 2
        ;;
    --perf)
        perf=1
        shift
        ;;
    --loomd-arg)
        extra+=("$2")
        shift 2
        ;;
    --no-build)
        do_build=0
        shift
        ;;
    *)
        sim_args+=("$1")
        shift
        ;;
    esac
done

if [ "$do_build" = 1 ]; then
    cmake --preset release >/dev/null
    cmake --build --preset release -j"$(nproc)" >/dev/null
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/loom-fleet.XXXXXX")
loomd_pid=
perf_pid=
stop_loomd() {
    [ -n "$loomd_pid" ] || return 0
    kill -TERM "$loomd_pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$loomd_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$loomd_pid" 2>/dev/null || true
    wait "$loomd_pid" 2>/dev/null || true
    loomd_pid=
}
stop_perf() {
    [ -n "$perf_pid" ] || return 0
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf_pid=
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    stop_perf
    stop_loomd
    rm -rf "$tmp"
}
trap cleanup EXIT

# loomd holds one connection per agent: give it (and the simulator) room.
ulimit -n "$(ulimit -Hn)"
loomd_args=(--http 127.0.0.1:0 --bind 'tcp://127.0.0.1:*' --log-level warn --sync "$sync"
    ${extra[@]+"${extra[@]}"})
# shellcheck disable=SC2086 # the wrapper is a command line
${LOOMD_WRAPPER:-} "$build/loomd" --state-dir "$tmp/state" "${loomd_args[@]}" \
    2>"$tmp/loomd.log" &
loomd_pid=$!
for _ in $(seq 600); do
    [ -s "$tmp/state/loomd.json" ] && break
    kill -0 "$loomd_pid" 2>/dev/null || break
    sleep 0.05
done
if [ ! -s "$tmp/state/loomd.json" ]; then
    echo "fleet.sh: loomd did not start:" >&2
    cat "$tmp/loomd.log" >&2
    exit 1
fi
read -r http zmq pid < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]));
print(j["http"], j["zmq"], j["pid"])' "$tmp/state/loomd.json")
# The simulator calls the API with the admin token loomd wrote on its start.
export LOOM_TOKEN
LOOM_TOKEN=$(cat "$tmp/state/admin.token")

if [ "$perf" = 1 ]; then
    # CLOCK_MONOTONIC time stamps, so that the simulator's phases select samples.
    perf record -k CLOCK_MONOTONIC -F 499 --call-graph dwarf,16384 -p "$pid" \
        -o "$tmp/perf.data" 2>"$tmp/perf.log" &
    perf_pid=$!
fi

rc=0
# The simulator stops itself after --timeout-s (600 s by default); this is
# the backstop should it hang.
timeout --signal=KILL 900 "$build/bench/loom-bench-fleet" --server "$http" --endpoint "$zmq" \
    --loomd-pid "$pid" --describe "$(basename "$build")/loomd ${loomd_args[*]}" \
    ${sim_args[@]+"${sim_args[@]}"} 2>"$tmp/sim.log" || rc=$?
cat "$tmp/sim.log" >&2

profile() { # title, then perf report options
    local title=$1
    shift
    echo
    echo "$title"
    echo '```'
    perf report -i "$tmp/perf.data" --stdio "$@" -g none 2>/dev/null |
        grep -v -e '^#' -e '^$' -e '\] 0x0000' | sed 's/ *- *- *$//' | head -45 || true
    echo '```'
}
if [ -n "$perf_pid" ]; then
    stop_perf
    profile "loomd, whole run, self time over 0.7% (perf):" \
        --no-children --sort dso,symbol --percent-limit 0.7
    profile "loomd, whole run, inclusive time over 2% (perf, DWARF stacks; some stacks do not unwind):" \
        --children --sort symbol --percent-limit 2
    window=$(sed -n 's/^bench_fleet: window post=\([0-9.]*\) first_dispatch=\([0-9.]*\) last_ack=\([0-9.]*\)$/\2,\3/p' "$tmp/sim.log")
    if [ -n "$window" ]; then
        profile "loomd, first Dispatch → last completion only, self time over 0.7% (perf):" \
            --time "$window" --no-children --sort dso,symbol --percent-limit 0.7
        profile "loomd, first Dispatch → last completion only, inclusive over 2% (perf):" \
            --time "$window" --children --sort symbol --percent-limit 2
    fi
    if [ -n "${PERF_DATA:-}" ]; then cp "$tmp/perf.data" "$PERF_DATA"; fi
fi

stop_loomd
warnings=$(grep -c . "$tmp/loomd.log" || true)
echo
echo "loomd wrote $warnings lines to stderr (log level warn)."
if [ "$warnings" -gt 0 ]; then
    echo '```'
    head -20 "$tmp/loomd.log"
    echo '```'
fi
exit "$rc"
