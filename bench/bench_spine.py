#!/usr/bin/env python3
"""Spine benchmarks through real loomd and one real agent on 127.0.0.1.

(a) 1,000 independent tasks running `true`: tasks per second, and the CPU
    that loomd and the agent used meanwhile (% of one core);
(b) a chain of 200 tasks: the time from one task's exit to the next task's
    process start (each task stamps CLOCK_MONOTONIC as it starts and exits
    at once), median and p99;
(c) loomd's resident memory after 10,000 finished tasks.

Prints a Markdown table for docs/benchmarks.md. Run through bench/run.sh.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LOOM_BUILD_DIR", os.path.join(ROOT, "build", "release"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from loomtest import BUILD, Cluster  # noqa: E402
from benchutil import machine, pct, proc_status_kib  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """CPU time of all of pid's threads: the sum of their schedstat run time
    (nanoseconds), where the kernel has it; else utime+stime in clock ticks."""
    try:
        total = 0
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def wide(c, n, name):
    c.submit("pipeline: %s\ntasks:\n%s" % (name, "".join(
        "  t%05d:\n    run: [true]\n" % i for i in range(n))))


def throughput(c, agent_pid, n):
    loomd0, agent0 = cpu_seconds(c.loomd.pid), cpu_seconds(agent_pid)
    t0 = time.monotonic()
    run = c.wait_run(c.start_run("wide"))
    wall = time.monotonic() - t0
    assert run["state"] == "succeeded", run["state"]
    return (n / wall, 100 * (cpu_seconds(c.loomd.pid) - loomd0) / wall,
            100 * (cpu_seconds(agent_pid) - agent0) / wall)


def chain_hops(c, n):
    stamp = os.path.join(BUILD, "bench", "loom-bench-stamp")
    trace = os.path.join(c.tmp, "chain-%d.trace" % time.monotonic_ns())
    tasks = []
    for i in range(n):
        needs = "    needs: [c%03d]\n" % (i - 1) if i else ""
        tasks.append("  c%03d:\n    run: [%s, %s, c%03d]\n%s" % (i, stamp, trace, i, needs))
    c.submit("pipeline: chain\ntasks:\n" + "".join(tasks))
    run = c.wait_run(c.start_run("chain"))
    assert run["state"] == "succeeded", run["state"]
    with open(trace) as f:
        ns = [int(line.split()[1]) for line in f]
    return [(b - a) / 1e6 for a, b in zip(ns, ns[1:])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slots", type=int, default=os.cpu_count())
    ap.add_argument("--sync", choices=["normal", "full"], default="normal",
                    help="loomd's --sync (SQLite synchronous=NORMAL or FULL)")
    ap.add_argument("--tmp-dir", default=None,
                    help="where loomd's state and the agent's work folder go (default: "
                         "the system's temporary folder); e.g. /dev/shm for tmpfs")
    args = ap.parse_args()

    import tempfile
    c = Cluster(log_level="warn",
                tmp=tempfile.mkdtemp(prefix="loombench-", dir=args.tmp_dir) if args.tmp_dir else None)
    try:
        c.start_loomd(extra=["--sync", args.sync])
        agent = c.start_agent("bench", args.slots)
        c.wait_agents(["bench"])
        wide(c, args.tasks, "wide")
        rates, loomd_cpu, agent_cpu, hops = [], [], [], []
        for _ in range(args.repeat):
            r, lc, ac = throughput(c, agent.pid, args.tasks)
            rates.append(r)
            loomd_cpu.append(lc)
            agent_cpu.append(ac)
            hops.append(chain_hops(c, args.chain))
        finished = args.repeat * (args.tasks + args.chain)
        while finished < 10000:
            throughput(c, agent.pid, args.tasks)
            finished += args.tasks
        rss = rss_kib(c.loomd.pid)
    finally:
        c.close()

    med = statistics.median
    hop_med = med([med(h) for h in hops])
    hop_p99 = med([pct(h, 99) for h in hops])
    print(machine(BUILD, "medians of %d runs; files in %s; --sync %s" % (
        args.repeat, args.tmp_dir or tempfile.gettempdir(), args.sync)))
    print("| benchmark | result | target |")
    print("|---|---|---|")
    print("| (a) %d independent `true` tasks, 1 agent with %d slots | **%.0f tasks/s** "
          "(runs: %s) | process start-up is the limit |" % (
              args.tasks, args.slots, med(rates), ", ".join("%.0f" % r for r in rates)))
    print("| (a) loomd CPU while doing it | **%.0f%% of one core** (agent: %.0f%%) | < 30%% "
          "at 1,000 tasks/s |" % (med(loomd_cpu), med(agent_cpu)))
    print("| (b) chain of %d, exit → next start | **median %.2f ms, p99 %.2f ms** | "
          "median < 2 ms |" % (args.chain, hop_med, hop_p99))
    print("| (c) loomd resident memory after %d finished tasks | **%.1f MiB** | — |" % (
        finished, rss / 1024))


if __name__ == "__main__":
    main()
