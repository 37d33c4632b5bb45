#!/usr/bin/env bash
# Runs one libFuzzer target for a short time, as a test: on a temporary copy
# of its seed corpus (so the repository is not changed), with its dictionary
# when fuzz/NAME.dict exists. Any crash, leak, sanitizer report or timeout
# fails the run; the input that caused it is kept in $LOOM_FUZZ_CRASH_DIR.
# Usage: run.sh FUZZ_BINARY CORPUS_DIR [SECONDS]
set -euo pipefail
bin=$1 corpus=$2 secs=${3:-15}
name=$(basename "$bin")
here=$(cd "$(dirname "$0")" && pwd)
crashes=${LOOM_FUZZ_CRASH_DIR:-$PWD/fuzz-crashes}/$name
mkdir -p "$crashes"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp -R "$corpus"/. "$work/corpus/"
args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536
      -print_final_stats=1 -artifact_prefix="$crashes/")
dict="$here/${name#fuzz_}.dict"
[ -f "$dict" ] && args+=(-dict="$dict")
exec "$bin" "${args[@]}" "$work/corpus"
