"""What the peer benchmarks share. Each peer script runs under Debian's
/usr/bin/python3 (where python3-distributed, python3-celery and snakemake
live), measures W1 (N independent tasks running `true`: tasks/s) and W2 (a
chain of tasks, each running loom-bench-stamp, so the gap between
consecutive stamps is one task's exit to the next one's process start), and
prints one JSON object on stdout for bench/compare.py."""
import argparse
import json
import os
import sys
import time


def hops_ms(trace):
    """Gaps between consecutive stamps in a loom-bench-stamp trace, in ms,
    ordered by the task's position in the chain (its name ends in a number)."""
    with open(trace) as f:
        rows = [line.split() for line in f if line.strip()]
    rows.sort(key=lambda r: int("".join(ch for ch in r[0] if ch.isdigit())))
    ns = [int(r[1]) for r in rows]
    return [(b - a) / 1e6 for a, b in zip(ns, ns[1:])]


def emit(obj):
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def peer_args():
    """The arguments bench/compare.py gives every peer script."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--stamp", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    return ap.parse_args()


def lines(path):
    """Lines in path so far (0 while it does not exist)."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_lines(path, n, timeout, what, step=0.001):
    """Polls until path has n lines; exits naming what after timeout s."""
    end = time.monotonic() + timeout
    while lines(path) < n:
        if time.monotonic() > end:
            raise SystemExit("%s: %d of %d done in %s s" % (what, lines(path), n, timeout))
        time.sleep(step)
