#!/usr/bin/env python3
"""Logs and artifacts at size, through real loomd and one real agent on 127.0.0.1.

(a) a task writing 2 GiB to stdout: every byte stored, MB/s from the run's
    start to its end, and loomd's and the agent's peak resident memory;
(b) a task leaving a 4 GiB output: MB/s from the task's exit to the run
    ended (hashing, upload, verification, fsync and record), and peak memory;
(c) the same 4 GiB again in a second run: what loomd wrote meanwhile
    (/proc/PID/io wchar: object store, database and logs together) --
    the content is not sent again, so this stays in kilobytes.

Prints a Markdown table for docs/benchmarks.md. The files go to --tmp-dir
(default the system's temporary folder): about 13 GiB free are needed.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LOOM_BUILD_DIR", os.path.join(ROOT, "build", "release"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from loomtest import BUILD, Cluster  # noqa: E402
from benchutil import machine, proc_status_kib  # noqa: E402

STAMP = os.path.join(BUILD, "bench", "loom-bench-stamp")
GiB = 1 << 30


def hwm_kib(pid):
    return proc_status_kib(pid, "VmHWM")


def rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def wchar(pid):
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def run(c, pipeline):
    t0 = time.monotonic_ns()
    rid = c.post("/api/v1/pipelines/%s/runs" % pipeline)["run"]["id"]
    end = time.monotonic() + 1800
    while time.monotonic() < end:
        r = c.get("/api/v1/runs/%d?wait=60" % rid, timeout=90)
        if r["state"] not in ("queued", "running"):
            return r, t0, time.monotonic_ns()
    raise AssertionError("run %d did not end" % rid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log-gib", type=float, default=2)
    ap.add_argument("--artifact-gib", type=float, default=4)
    ap.add_argument("--tmp-dir", default=None)
    args = ap.parse_args()
    c = Cluster(log_level="warn", tmp=tempfile.mkdtemp(prefix="loombench-", dir=args.tmp_dir))
    log_bytes = int(args.log_gib * GiB)
    art_bytes = int(args.artifact_gib * GiB)
    try:
        c.start_loomd(extra=["--max-log-bytes", "%d" % (2 * log_bytes)])
        agent = c.start_agent("bench", 2, extra=["--cache-size", "1G"])
        c.wait_agents(["bench"])
        trace = os.path.join(c.tmp, "exit.trace")
        c.submit("pipeline: logs\ntasks:\n  t: {run: 'head -c %d /dev/zero | tr \"\\\\0\" x'}\n"
                 % log_bytes)
        c.submit("pipeline: art\ntasks:\n  t:\n    run: head -c %d /dev/zero > big.bin && "
                 "%s %s exit\n    outputs: [big.bin]\n" % (art_bytes, STAMP, trace))
        base_l, base_a = rss_kib(c.loomd.pid), rss_kib(agent.pid)
        r, t0, t1 = run(c, "logs")
        assert r["state"] == "succeeded", r
        stored = os.path.getsize(os.path.join(c.state, "logs", str(r["id"]),
                                              "%d.log" % r["tasks"][0]["attempt_id"]))
        log_mbs = log_bytes / 1e6 / ((t1 - t0) / 1e9)
        log_l, log_a = hwm_kib(c.loomd.pid), hwm_kib(agent.pid)
        w0 = wchar(c.loomd.pid)
        r, t0, t1 = run(c, "art")
        assert r["state"] == "succeeded", r
        with open(trace) as f:
            exited = int(f.read().split()[1])
        art_mbs = art_bytes / 1e6 / ((t1 - exited) / 1e9)
        sent1 = wchar(c.loomd.pid) - w0
        art_l, art_a = hwm_kib(c.loomd.pid), hwm_kib(agent.pid)
        os.unlink(trace)
        l0 = wchar(c.loomd.pid)
        r, t0, t1 = run(c, "art")
        assert r["state"] == "succeeded", r
        sent2 = wchar(c.loomd.pid) - l0
        with open(trace) as f:
            exited = int(f.read().split()[1])
        dup_s = (t1 - exited) / 1e9
    finally:
        c.close()
    print(machine(BUILD, "files in %s" % (args.tmp_dir or tempfile.gettempdir())))
    print("| benchmark | result | target |")
    print("|---|---|---|")
    print("| (a) %.0f GiB to stdout: stored bytes, speed | **%d of %d bytes, %.0f MB/s** | "
          "≥ 300 MB/s |" % (args.log_gib, stored, log_bytes, log_mbs))
    print("| (a) peak memory: loomd / agent (growth over idle) | %.1f / %.1f MiB (+%.1f / +%.1f) "
          "| growth < 64 MiB |" % (log_l / 1024, log_a / 1024, (log_l - base_l) / 1024,
                                   (log_a - base_a) / 1024))
    print("| (b) %.0f GiB output, task exit → recorded | **%.0f MB/s** | ≥ 500 MB/s |" % (
        args.artifact_gib, art_mbs))
    print("| (b) peak memory: loomd / agent (growth over idle) | %.1f / %.1f MiB (+%.1f / +%.1f) "
          "| growth < 64 MiB |" % (art_l / 1024, art_a / 1024, (art_l - base_l) / 1024,
                                   (art_a - base_a) / 1024))
    print("| (c) the same output again: bytes loomd wrote (the first time: %d) | **%d bytes**, "
          "exit → recorded %.1f s (the agent's hashing) | 0 bytes of content |" % (
              sent1, sent2, dup_s))


if __name__ == "__main__":
    main()
