#!/usr/bin/env bash
# Builds the release preset and runs loom's own benchmarks; paste the printed
# table into docs/benchmarks.md together with this command. For loom beside
# Dask, Celery, Snakemake and the machine's floor, in one run, use
# `python3 bench/compare.py` (it also runs the triggers, artifacts, fleet and
# recovery benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" >/dev/null
python3 bench/bench_spine.py "$@"
python3 bench/bench_triggers.py
python3 bench/bench_artifacts.py
python3 bench/bench_recovery.py
