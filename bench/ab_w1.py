#!/usr/bin/env python3
"""W1 (1,000 independent `true` tasks) on two or more builds, alternating.

A change worth a few percent disappears in the noise of a shared machine
unless the builds run side by side: this runs each variant in turn, round
after round, each round a fresh loomd and agent, and prints per-round
medians, the ratio to the first variant, and how idle the CPUs were.

    python3 bench/ab_w1.py --variant before=/tmp/old/build/release \\
        --variant now=build/release --variant prefetch=build/release:--prefetch,2

A variant is NAME=BUILD_DIR[:AGENT_ARG,AGENT_ARG...].
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# One round of one variant, in its own interpreter: loomtest reads the build
# folder when imported.
CHILD = r"""
import os, sys, json
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "integration"))
sys.path.insert(0, os.path.join(sys.argv[1], "bench"))
from loomtest import Cluster
import bench_spine
args = json.loads(sys.argv[2])
c = Cluster(log_level="warn")
try:
    c.start_loomd()
    agent = c.start_agent("bench", args["slots"], extra=args["agent_args"])
    c.wait_agents(["bench"])
    bench_spine.wide(c, args["tasks"], "wide")
    bench_spine.throughput(c, agent.pid, args["tasks"])  # warm-up
    out = []
    for _ in range(args["runs"]):
        with open("/proc/stat") as f:
            s0 = [int(x) for x in f.readline().split()[1:]]
        rate, _, _ = bench_spine.throughput(c, agent.pid, args["tasks"])
        with open("/proc/stat") as f:
            s1 = [int(x) for x in f.readline().split()[1:]]
        d = [b - a for a, b in zip(s0, s1)]
        out.append([rate, (d[3] + d[4]) / max(1, sum(d))])
    print(json.dumps(out))
finally:
    c.close()
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True,
                    help="NAME=BUILD_DIR[:AGENT_ARG,...]; the first is the baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5, help="W1 runs per variant per round")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=os.cpu_count())
    args = ap.parse_args()
    variants = []
    for v in args.variant:
        name, _, rest = v.partition("=")
        build, _, extra = rest.partition(":")
        if not name or not build:
            ap.error("--variant %r: expected NAME=BUILD_DIR[:ARG,...]" % v)
        variants.append((name, os.path.abspath(build), [a for a in extra.split(",") if a]))
    root = os.path.dirname(HERE)
    med = {name: [] for name, _, _ in variants}
    idle = {name: [] for name, _, _ in variants}
    import json
    for r in range(args.rounds):
        with open("/proc/loadavg") as f:
            print("round %d (load %s)" % (r + 1, " ".join(f.read().split()[:3])), flush=True)
        for name, build, extra in variants:
            env = dict(os.environ, LOOM_BUILD_DIR=build)
            spec = json.dumps({"slots": args.slots, "agent_args": extra, "tasks": args.tasks,
                               "runs": args.runs})
            p = subprocess.run([sys.executable, "-c", CHILD, root, spec], env=env,
                               capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit("ab_w1: %s failed:\n%s" % (name, p.stderr[-2000:]))
            runs = json.loads(p.stdout.strip().splitlines()[-1])
            rates = [x[0] for x in runs]
            med[name].append(statistics.median(rates))
            idle[name].extend(x[1] for x in runs)
            print("  %-12s %s  median %.0f tasks/s" % (
                name, " ".join("%.0f" % x for x in rates), med[name][-1]), flush=True)
    base = variants[0][0]
    print("\n| variant | per-round medians (tasks/s) | median | vs %s | CPUs idle |" % base)
    print("|---|---|---|---|---|")
    for name, _, extra in variants:
        ratios = [a / b for a, b in zip(med[name], med[base])]
        print("| %s%s | %s | **%.0f** | ×%.2f (per round ×%.2f–%.2f) | %.0f–%.0f%% |" % (
            name, " (`%s`)" % " ".join(extra) if extra else "",
            ", ".join("%.0f" % x for x in med[name]), statistics.median(med[name]),
            statistics.median(ratios), min(ratios), max(ratios),
            100 * min(idle[name]), 100 * max(idle[name])))


if __name__ == "__main__":
    main()
