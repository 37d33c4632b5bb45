#!/usr/bin/env python3
"""Trigger-to-start latency through real loomd and one real agent on 127.0.0.1.

(a) event: from just before an HTTP POST /api/v1/events/NAME is sent to
    the first task's process starting (the task stamps CLOCK_MONOTONIC as
    it starts; Python's time.monotonic_ns reads the same clock);
(b) file: from just before a file in a watched folder (settle: 0) is closed
    after writing to the first task's process starting.

Each sample waits for the previous run to finish, so they do not queue
behind one another. Prints a Markdown table for docs/benchmarks.md.
"""
import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LOOM_BUILD_DIR", os.path.join(ROOT, "build", "release"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from loomtest import BUILD, Cluster  # noqa: E402
from benchutil import machine, pct  # noqa: E402

STAMP = os.path.join(BUILD, "bench", "loom-bench-stamp")


def wait_lines(path, n, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    raise AssertionError("no stamp %d in %s" % (n, path))


def wait_idle(c, pipeline, n):
    end = time.monotonic() + 30
    while time.monotonic() < end:
        runs = c.get("/api/v1/runs?pipeline=%s&limit=1" % pipeline)["runs"]
        if len(runs) and runs[0]["state"] not in ("queued", "running"):
            return
        time.sleep(0.001)
    raise AssertionError("run of %s did not end" % pipeline)


def bench_events(c, n, trace):
    c.submit("pipeline: ev\ntriggers: [{event: go}]\n"
             "tasks:\n  t: {run: [%s, %s, ev]}\n" % (STAMP, trace))
    body = json.dumps({"x": 1}).encode()
    lat = []
    for i in range(n):
        req = urllib.request.Request(c.url + "/api/v1/events/go", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **c.auth()})
        t0 = time.monotonic_ns()
        with urllib.request.urlopen(req) as r:
            r.read()
        line = wait_lines(trace, i + 1)[i]
        lat.append((int(line.split()[1]) - t0) / 1e6)
        wait_idle(c, "ev", i + 1)
    return lat


def bench_files(c, n, trace, folder):
    os.makedirs(folder)
    c.submit("pipeline: fl\ntriggers: [{data: {path: %s, settle: 0s}}]\n"
             "tasks:\n  t: {run: [%s, %s, fl]}\n" % (folder, STAMP, trace))
    time.sleep(0.2)  # the watch is added on submit; let the first scan pass
    lat = []
    for i in range(n):
        fd = os.open(os.path.join(folder, "f%05d.csv" % i), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"a,b\n1,2\n")
        t0 = time.monotonic_ns()
        os.close(fd)
        line = wait_lines(trace, i + 1)[i]
        lat.append((int(line.split()[1]) - t0) / 1e6)
        wait_idle(c, "fl", i + 1)
    return lat


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="samples of each kind")
    args = ap.parse_args()
    c = Cluster(log_level="warn")
    try:
        c.start_loomd()
        c.start_agent("bench", 2)
        c.wait_agents(["bench"])
        ev = bench_events(c, args.n, os.path.join(c.tmp, "ev.trace"))
        fl = bench_files(c, args.n, os.path.join(c.tmp, "fl.trace"), os.path.join(c.tmp, "in"))
    finally:
        c.close()
    med = statistics.median
    print(machine(BUILD, "%d samples each" % args.n))
    print("| trigger → first task's process start | median | p90 | p99 | target |")
    print("|---|---|---|---|---|")
    print("| HTTP event (POST sent → process started) | **%.2f ms** | %.2f ms | %.2f ms | "
          "median < 3 ms |" % (med(ev), pct(ev, 90), pct(ev, 99)))
    print("| file closed in a watched folder (`settle: 0`) | **%.2f ms** | %.2f ms | %.2f ms | "
          "median < 10 ms |" % (med(fl), pct(fl, 90), pct(fl, 99)))


if __name__ == "__main__":
    main()
