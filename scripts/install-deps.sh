#!/usr/bin/env bash
# Installs, from Debian's archive only, the packages loom builds against
# (scripts/quickstart.sh) and, with --test, what its test suite also needs
# (scripts/test.sh). Skips apt entirely when everything is already present,
# so a second run is instant and works offline.
#
#   bash scripts/install-deps.sh          # build and run loom
#   bash scripts/install-deps.sh --test   # and test it
#
# Some test packages ship daemons (prometheus; slurm-wlm's slurmctld and
# slurmd; munge). The tests start their own private instances; the host's
# are not started by the install (a policy-rc.d refuses them for its
# duration) and, where systemd runs, not enabled either.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libsqlite3-dev libuv1-dev libsodium-dev libyaml-dev libjansson-dev
  libmicrohttpd-dev libcurl4-openssl-dev libcmocka-dev
  python3 procps tzdata
  python3-sklearn # dag-examples/continuous-training trains a real model
)
test_pkgs=(
  libfaketime # tests/integration/test_clock.py steps loomd's wall clock for real
  openssl # test_auth makes a self-signed certificate
  clang libclang-rt-14-dev # the libFuzzer targets in fuzz/ (LOOM_FUZZ)
  prometheus # promtool checks GET /metrics (tests/integration/test_metrics.py)
  chromium # tests/integration/test_browser_ui.py drives the web UI headless
  slurm-wlm munge # tests/integration/test_slurm.py runs a one-node Slurm cluster
)
daemons=(prometheus slurmctld slurmd munge)

testing=false
case "${1:-}" in
--test) testing=true ;;
"") ;;
*)
  echo "usage: install-deps.sh [--test]" >&2
  exit 2
  ;;
esac
if $testing; then
  pkgs+=("${test_pkgs[@]}")
  # Node.js and npm run the browser test's driver (playwright-core); any
  # node 18+ on PATH will do, else Debian's.
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=true
  fi
  trap '$own_policy && $SUDO rm -f "$policy"' EXIT
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -d /run/systemd/system ]; then
    for d in "${daemons[@]}"; do
      for p in "${missing[@]}"; do
        case "$p:$d" in prometheus:prometheus | slurm-wlm:slurm* | munge:munge)
          $SUDO systemctl disable --now "$d" >/dev/null 2>&1 || true ;;
        esac
      done
    done
  fi
fi

if $testing; then
  # playwright-core, pinned by tests/browser/package-lock.json (npm's
  # registry is used for this browser-test tooling only). It drives
  # /usr/bin/chromium: no browser is ever downloaded.
  browser="$(dirname "$0")/../tests/browser"
  if [ ! -d "$browser/node_modules/playwright-core" ]; then
    (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
fi
