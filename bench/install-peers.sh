#!/usr/bin/env bash
# Installs the peers that bench/compare.py measures loom against, from
# Debian's packages: Dask distributed, Celery with a Redis broker, Snakemake,
# and gnuplot for the plots. The test suite does not need them, so
# scripts/install-deps.sh does not install them.
#
# Slurm is not installed here (scripts/install-deps.sh installs slurm-wlm and
# munge for the tests); compare.py starts the one-node cluster of tests/slurm/:
# see bench/slurm/README.md.
set -euo pipefail
pkgs=(python3-distributed python3-celery python3-redis redis-server snakemake gnuplot-nox
    libzmq3-dev libsqlite3-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps redis-server's recommended tools out; the
# package starts no daemon we rely on: compare.py runs its own redis-server
# on a free port of 127.0.0.1 in a private folder.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
