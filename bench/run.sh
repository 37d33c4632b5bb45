#!/usr/bin/env bash
# Builds the release preset and runs the benchmarks; paste the printed table
# into docs/benchmarks.md together with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" >/dev/null
python3 bench/bench_spine.py "$@"
python3 bench/bench_triggers.py
python3 bench/bench_artifacts.py
python3 bench/bench_recovery.py
