#!/usr/bin/env python3
"""The Slurm executor against Slurm itself, on a one-node cluster started here
(tests/slurm/slurmcluster.py: munged, slurmctld, slurmd as root on loopback).

(a) N no-op tasks (`true`), all independent:
    loom: one pipeline with `foreach` over N items through a loom-agent with
          --executor slurm; from the run's start to its end;
    Slurm: N `sbatch --wrap true` submitted one after another by a shell
          loop, from the first submission to the last job's end.
(b) a chain of M no-op tasks, each needing the one before:
    loom: M tasks with `needs`, loomd driving the order;
    Slurm: M sbatch with --dependency=afterok:PREVIOUS, submitted at once;
    the figure is the total divided by M (one hop).

Both sides wait for the end by polling squeue or loomd's API with the same
step, so neither gains from how the end is noticed. Prints a Markdown table
for docs/benchmarks.md. Run as root (the cluster's daemons run as root).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LOOM_BUILD_DIR", os.path.join(ROOT, "build", "release"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "slurm"))
from loomtest import BUILD, Cluster  # noqa: E402
from benchutil import machine  # noqa: E402
from slurmcluster import SlurmCluster  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def squeue_states(env, name):
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--name=" + name,
                          "-o", "%T"], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out


def wait_jobs(env, name, n, step=0.05, limit=3600):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        states = squeue_states(env, name)
        if len(states) >= n and all(s in TERMINAL for s in states):
            bad = [s for s in states if s != "COMPLETED"]
            assert not bad, "jobs of %s ended %s" % (name, sorted(set(bad)))
            return
        time.sleep(step)
    raise AssertionError("jobs %s did not end" % name)


def slurm_fan(env, work, n, tag):
    name = "direct-fan-%s" % tag
    t0 = time.monotonic()
    # One shell loop: the submissions themselves, not Python's process start-up.
    subprocess.run(["sh", "-c", "i=0; while [ $i -lt %d ]; do sbatch --parsable --quiet "
                    "--job-name=%s --chdir=%s --output=/dev/null --wrap=true >/dev/null "
                    "|| exit 1; i=$((i+1)); done" % (n, name, work)], env=env, check=True)
    wait_jobs(env, name, n)
    return time.monotonic() - t0


def slurm_chain(env, work, m, tag):
    name = "direct-chain-%s" % tag
    t0 = time.monotonic()
    script = ("prev=$(sbatch --parsable --job-name=%s --chdir=%s --output=/dev/null --wrap=true)"
              " || exit 1; i=1; while [ $i -lt %d ]; do prev=$(sbatch --parsable "
              "--job-name=%s --chdir=%s --output=/dev/null --dependency=afterok:$prev "
              "--wrap=true) || exit 1; i=$((i+1)); done" % (name, work, m, name, work))
    subprocess.run(["sh", "-c", script], env=env, check=True)
    wait_jobs(env, name, m)
    return time.monotonic() - t0


def loom_run(c, pipeline, step=0.05):
    t0 = time.monotonic()
    rid = c.start_run(pipeline)
    end = time.monotonic() + 3600
    while time.monotonic() < end:
        r = c.get("/api/v1/runs/%d" % rid)
        if r["state"] not in ("queued", "running"):
            assert r["state"] == "succeeded", r["state"]
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError("run %d did not end" % rid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slots", type=int, default=64,
                    help="the Slurm agent's slots: jobs it keeps submitted at once")
    ap.add_argument("--poll", default="200ms", help="the agent's --slurm-poll")
    args = ap.parse_args()

    folder = tempfile.mkdtemp(prefix="loom-bench-slurm-")
    slurm = SlurmCluster(folder).start()
    c = Cluster(log_level="warn")
    work = os.path.join(folder, "direct")
    os.makedirs(work)
    try:
        c.start_loomd()
        c.start_agent("hpc", args.slots, env=slurm.env,
                      extra=["--executor", "slurm", "--slurm-poll", args.poll])
        c.wait_agents(["hpc"])
        items = ", ".join(str(i) for i in range(args.tasks))
        c.submit("pipeline: fan\ntasks:\n  noop:\n    foreach: [%s]\n    run: [\"true\"]\n"
                 % items)
        chain = []
        for i in range(args.chain):
            needs = "    needs: [c%03d]\n" % (i - 1) if i else ""
            chain.append("  c%03d:\n    run: [\"true\"]\n%s" % (i, needs))
        c.submit("pipeline: chain\ntasks:\n" + "".join(chain))
        fan_loom, fan_slurm, chain_loom, chain_slurm = [], [], [], []
        for r in range(args.repeat):
            fan_slurm.append(slurm_fan(slurm.env, work, args.tasks, r))
            fan_loom.append(loom_run(c, "fan"))
            chain_slurm.append(slurm_chain(slurm.env, work, args.chain, r))
            chain_loom.append(loom_run(c, "chain"))
            print("repeat %d: fan slurm %.1fs loom %.1fs; chain slurm %.1fs loom %.1fs" % (
                r + 1, fan_slurm[-1], fan_loom[-1], chain_slurm[-1], chain_loom[-1]),
                file=sys.stderr)
    finally:
        c.close()
        slurm.stop()

    med = statistics.median
    print(machine(BUILD, "one-node Slurm 22.05 (tests/slurm/slurm.conf.in: 2 CPUs, "
                  "OverSubscribe=FORCE:8, batch_sched_delay=0); agent --slurm-poll %s, "
                  "--slots %d; medians of %d runs" % (args.poll, args.slots, args.repeat)))
    print("| workload | Slurm directly | through loom's Slurm executor |")
    print("|---|---|---|")
    print("| (a) %d no-op jobs: wall time | %.1f s (**%.1f jobs/s**) | %.1f s "
          "(**%.1f tasks/s**) |" % (args.tasks, med(fan_slurm), args.tasks / med(fan_slurm),
                                    med(fan_loom), args.tasks / med(fan_loom)))
    print("| (b) chain of %d: per hop | **%.2f s** (`--dependency=afterok`) | **%.2f s** "
          "(loomd drives the order) |" % (args.chain, med(chain_slurm) / args.chain,
                                          med(chain_loom) / args.chain))
    print("\nRuns (s): fan Slurm %s, loom %s; chain Slurm %s, loom %s" % (
        ", ".join("%.1f" % x for x in fan_slurm), ", ".join("%.1f" % x for x in fan_loom),
        ", ".join("%.1f" % x for x in chain_slurm), ", ".join("%.1f" % x for x in chain_loom)))


if __name__ == "__main__":
    main()
