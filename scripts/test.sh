#!/usr/bin/env bash
# Installs what is missing (Debian packages only), builds loom twice -- the
# debug preset with AddressSanitizer and UBSan, which runs the tests, and the
# release preset, so that both stay warning-free -- then runs the whole test
# suite through ctest, then builds the libFuzzer targets (clang, build/fuzz)
# and runs each for LOOM_FUZZ_SECONDS (default 15) on a copy of its corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --test
jobs=$(nproc)

cmake --preset release >/dev/null
cmake --build --preset release -j"$jobs"

cmake --preset debug >/dev/null
cmake --build --preset debug -j"$jobs"
ctest --preset debug -j"$jobs"

CC=clang cmake -S . -B build/fuzz -DLOOM_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=Debug -DLOOM_FUZZ_SECONDS="${LOOM_FUZZ_SECONDS:-15}" >/dev/null
cmake --build build/fuzz -j"$jobs" --target loom_fuzzers
ctest --test-dir build/fuzz -L fuzz -j"$jobs" --output-on-failure
