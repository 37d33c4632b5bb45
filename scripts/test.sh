#!/usr/bin/env bash
# Installs what is missing (Debian packages only), builds loom twice -- the
# debug preset with AddressSanitizer and UBSan, which runs the tests, and the
# release preset, so that both stay warning-free -- then runs the whole test
# suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
jobs=$(nproc)

cmake --preset release >/dev/null
cmake --build --preset release -j"$jobs"

cmake --preset debug >/dev/null
cmake --build --preset debug -j"$jobs"
ctest --preset debug -j"$jobs"
