#!/usr/bin/env bash
# Installs what is missing, builds loom, starts loomd and one agent on
# 127.0.0.1 (`loom up`), submits dag-examples/quickstart.yaml, runs it and
# shows every task's state and output. Stops both daemons at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" >/dev/null
loom=build/release/loom

export LOOM_HOME
LOOM_HOME=$(mktemp -d "${TMPDIR:-/tmp}/loom-quickstart.XXXXXX")
# Ports chosen by the OS, so the quickstart never collides with anything;
# the CLI finds loomd through $LOOM_HOME/loomd.json.
"$loom" up --home "$LOOM_HOME" --http 127.0.0.1:0 --bind 'tcp://127.0.0.1:*' \
    >"$LOOM_HOME/up.log" 2>&1 &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null || true; rm -rf "$LOOM_HOME"' EXIT

# Wait (at most 15 s) for the agent to register.
for _ in $(seq 300); do
    "$loom" agents 2>/dev/null | grep -q connected && break
    kill -0 $up 2>/dev/null || { cat "$LOOM_HOME/up.log"; exit 1; }
    sleep 0.05
done

echo "== loom agents"
"$loom" agents
echo
echo "== loom validate dag-examples/quickstart.yaml"
"$loom" validate dag-examples/quickstart.yaml
echo "== loom submit dag-examples/quickstart.yaml"
"$loom" submit dag-examples/quickstart.yaml
echo
echo "== loom run quickstart --logs"
"$loom" run quickstart --logs
echo
echo "The quickstart pipeline ran end to end. To keep a loom running:"
echo "  $loom up          # loomd on http://127.0.0.1:8420 and one local agent"
