#!/usr/bin/env python3
"""Recovery time: loomd restarting on a database with 100,000 finished tasks
and 1,000 unfinished ones is serving again within how long?

A real loomd runs 100,000 instant tasks against the fleet simulator
(loom-bench-fleet, 200 simulated agents), then a run of 1,000 tasks whose
first 20 are held running on one real agent (they wait for a file) and the
rest queued behind them. loomd is SIGKILLed and started again on the same
state folder; the figures are the time from the new process's start to
its HTTP API answering (`/api/v1/health`) and to the unfinished run being
served (`GET /api/v1/runs/ID`), median of 5 restarts.
"""
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LOOM_BUILD_DIR", os.path.join(ROOT, "build", "release"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from loomtest import BUILD, Cluster  # noqa: E402
from benchutil import machine  # noqa: E402


def served(c, path):
    try:
        req = urllib.request.Request(c.url + path, headers=c.auth())
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def main():
    c = Cluster(log_level="warn", agent_timeout="60s")
    times = []
    try:
        c.start_loomd()
        fleet = os.path.join(BUILD, "bench", "loom-bench-fleet")
        subprocess.run([fleet, "--server", c.url, "--endpoint", c.zmq, "--loomd-pid",
                        str(c.loomd.pid), "--agents", "200", "--tasks", "100000"],
                       check=True, stdout=subprocess.DEVNULL, env=c.cli_env())
        gate = os.path.join(c.tmp, "gate")
        c.start_agent("real", 20, extra=["--label", "real=1"])
        c.wait_agents(["real"])
        c.submit("pipeline: held\ntasks:\n  t:\n    resources: {labels: {real: '1'}}\n"
                 "    foreach: %s\n    run: while [ ! -e %s ]; do sleep 0.1; done\n"
                 % (list(range(1000)), gate))
        run_id = c.start_run("held")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            tasks = c.get("/api/v1/runs/%d" % run_id)["tasks"]
            if sum(1 for t in tasks if t["state"] == "running") == 20:
                break
            time.sleep(0.05)
        for _ in range(5):
            c.stop_loomd(signal.SIGKILL)
            t0 = time.monotonic()
            c.start_loomd()
            health = time.monotonic()
            while not served(c, "/api/v1/health"):
                time.sleep(0.001)
            health = time.monotonic() - t0
            while not served(c, "/api/v1/runs/%d?tasks=0" % run_id):
                time.sleep(0.001)
            times.append((health, time.monotonic() - t0))
        open(gate, "w").close()
    finally:
        c.close()
    med = statistics.median
    print(machine(BUILD, "median of %d restarts" % len(times)))
    print("| loomd SIGKILLed with 100,000 finished and 1,000 unfinished tasks (20 running) | "
          "result | target |")
    print("|---|---|---|")
    print("| start → HTTP API answering (includes waiting for loomd.json) | **%.0f ms** (%s) | "
          "< 1 s |" % (1000 * med([h for h, _ in times]),
                       ", ".join("%.0f" % (1000 * h) for h, _ in times)))
    print("| start → the unfinished run served | **%.0f ms** | < 1 s |" % (
        1000 * med([r for _, r in times])))


if __name__ == "__main__":
    main()
