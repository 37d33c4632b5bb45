#!/usr/bin/env bash
# Installs, from Debian's archive only, the packages loom builds and tests
# against. Skips apt entirely when everything is already present, so a second
# run is instant and works offline.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libsqlite3-dev libuv1-dev libsodium-dev libyaml-dev libjansson-dev
  libmicrohttpd-dev libcurl4-openssl-dev libcmocka-dev
  python3 procps tzdata
  libfaketime # tests/integration/test_clock.py steps loomd's wall clock for real
  openssl # test_auth makes a self-signed certificate
  python3-sklearn # dag-examples/continuous-training trains a real model
  slurm-wlm munge # tests/integration/test_slurm.py runs a one-node Slurm cluster
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
