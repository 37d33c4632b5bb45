#!/usr/bin/env python3
"""Soak: steady load for an hour (--minutes) with loomd and an agent killed
with SIGKILL periodically; loomd's and the agents' memory and open
descriptors and the SQLite WAL are sampled throughout and must stay flat.

Load: a pipeline of 10 tasks (a fan-out of 8 between a first and a last
task, each printing 50 lines) started every --every seconds, against two
agents of 4 slots: "steady" is never killed (so its figures cover the whole
soak), "killed" is SIGKILLed every --kill-agent minutes and started again.
loomd is SIGKILLed every --kill-loomd minutes and started again on the same
state folder. At the end every run must have succeeded, each task's success
recorded once, and `PRAGMA integrity_check` must say ok.

Flat means: within each loomd lifetime, and over the whole soak for the
agent that is never killed, the median of the last quarter of samples is
at most 1.25x (memory) or +4 (descriptors) the median of the second quarter
(the first is warm-up); the WAL never exceeds 16 MiB (SQLite checkpoints it
at 1,000 pages, about 4 MiB, unless a reader starves it).

  python3 bench/soak.py                  # the hour, figures for docs/benchmarks.md
  python3 bench/soak.py --minutes 1      # a smoke run
"""
import argparse
import os
import signal
import sqlite3
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LOOM_BUILD_DIR", os.path.join(ROOT, "build", "release"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from loomtest import BUILD, Cluster  # noqa: E402
from benchutil import machine, proc_status_kib  # noqa: E402

DAG = """
pipeline: soak
tasks:
  first:
    run: for i in $(seq 50); do echo "first line $i"; done
  work:
    needs: first
    foreach: [1, 2, 3, 4, 5, 6, 7, 8]
    run: for i in $(seq 50); do echo "work ${{ item }} line $i"; done
  last:
    needs: work
    run: for i in $(seq 50); do echo "last line $i"; done
"""
WAL_LIMIT = 16 << 20


def fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def quarter_medians(xs):
    n = len(xs)
    if n < 8:
        return None
    return statistics.median(xs[n // 4:n // 2]), statistics.median(xs[3 * n // 4:])


def flat(xs, kind):
    q = quarter_medians(xs)
    if q is None:
        return True, "too few samples"
    early, late = q
    ok = late <= early * 1.25 if kind == "mem" else late <= early + 4
    return ok, "%s -> %s" % (early, late)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between runs")
    ap.add_argument("--kill-loomd", type=float, default=15, help="minutes between loomd kills")
    ap.add_argument("--kill-agent", type=float, default=10, help="minutes between agent kills")
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples")
    ap.add_argument("--csv", help="write every sample here")
    ap.add_argument("--keep", action="store_true", help="keep the state folder and logs")
    ap.add_argument("--prefetch", type=int, default=0,
                    help="the agents' --prefetch (default 0, loom-agent's default)")
    a = ap.parse_args()

    c = Cluster(log_level="warn", heartbeat="1s", agent_timeout="10s")
    wal = os.path.join(c.state, "loom.db-wal")
    samples = []  # (t, segment, loomd_rss, loomd_fds, wal, db, steady_rss, steady_fds, killed_rss)
    runs, refused = [], 0
    kills = {"loomd": 0, "agent": 0}
    ok = True
    try:
        c.start_loomd()
        agent_args = ["--prefetch", str(a.prefetch)] if a.prefetch else []
        c.start_agent("steady", 4, extra=agent_args)
        c.start_agent("killed", 4, extra=agent_args)
        c.wait_agents(["steady", "killed"])
        c.submit(DAG)
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        next_run = next_sample = t0
        next_kill_loomd = t0 + a.kill_loomd * 60
        next_kill_agent = t0 + a.kill_agent * 60
        segment = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_run:
                next_run += a.every
                try:
                    runs.append(c.start_run("soak"))
                except Exception as e:  # loomd restarting: the next one goes
                    refused += 1
                    print("run not started: %s" % e, file=sys.stderr)
            if now >= next_sample:
                next_sample += a.sample
                steady = c.agents["steady"].pid
                killed = c.agents["killed"].pid
                samples.append((round(now - t0, 1), segment,
                                proc_status_kib(c.loomd.pid, "VmRSS"), fds(c.loomd.pid),
                                size(wal), size(os.path.join(c.state, "loom.db")),
                                proc_status_kib(steady, "VmRSS"), fds(steady),
                                proc_status_kib(killed, "VmRSS")))
            if now >= next_kill_loomd:
                next_kill_loomd += a.kill_loomd * 60
                c.stop_loomd(signal.SIGKILL)
                c.start_loomd()
                kills["loomd"] += 1
                segment += 1
            if now >= next_kill_agent:
                next_kill_agent += a.kill_agent * 60
                c.agents["killed"].send_signal(signal.SIGKILL)
                c.agents["killed"].wait()
                c.start_agent("killed", 4, extra=agent_args)
                kills["agent"] += 1
            time.sleep(max(0.0, min(next_run, next_sample) - time.monotonic()))

        # Drain: every run must end, and succeed.
        states = {}
        for r in runs:
            states[r] = c.wait_run(r)["state"]
        bad = {r: s for r, s in states.items() if s != "succeeded"}
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(c.state, "loom.db"), uri=True)
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        twice = db.execute("SELECT COUNT(*) FROM (SELECT task_id FROM attempts WHERE "
                           "state = 'succeeded' GROUP BY task_id HAVING COUNT(*) > 1)").fetchone()[0]
        db.close()
    finally:
        c.close(keep=a.keep)
        if a.keep:
            print("kept %s" % c.tmp)

    if a.csv:
        with open(a.csv, "w") as f:
            f.write("t_s,loomd_segment,loomd_rss_kib,loomd_fds,wal_bytes,db_bytes,"
                    "steady_agent_rss_kib,steady_agent_fds,killed_agent_rss_kib\n")
            for s in samples:
                f.write(",".join(str(x) for x in s) + "\n")

    print(machine(BUILD, "bench/soak.py --minutes %g" % a.minutes), end="")
    print("%d runs (%d tasks) started over %.0f min, %d starts refused while loomd restarted; "
          "loomd SIGKILLed %d times, agent %d times" % (
              len(runs), 10 * len(runs), a.minutes, refused, kills["loomd"], kills["agent"]))
    print("runs not succeeded: %d; tasks with two recorded successes: %d; integrity_check: %s"
          % (len(bad), twice, integrity))
    ok = not bad and twice == 0 and integrity == "ok"
    print("\n| figure | first sample | min | median | max | last | flat (2nd -> 4th quarter median) |")
    print("|---|---|---|---|---|---|---|")
    cols = {"loomd RSS (KiB)": (2, "mem"), "loomd open fds": (3, "fd"),
            "WAL (bytes)": (4, None), "database (bytes)": (5, None),
            "steady agent RSS (KiB)": (6, "mem"), "steady agent fds": (7, "fd"),
            "killed agent RSS (KiB)": (8, None)}
    for name, (i, kind) in cols.items():
        xs = [s[i] for s in samples]
        if not xs:
            continue
        verdict = ""
        if kind and name.startswith("loomd"):
            parts = []
            for seg in sorted({s[1] for s in samples}):
                f, why = flat([s[i] for s in samples if s[1] == seg], kind)
                ok = ok and f
                parts.append("%s%s" % (why, "" if f else " NOT FLAT"))
            verdict = "; ".join(parts) + " (per loomd lifetime)"
        elif kind:
            f, why = flat(xs, kind)
            ok = ok and f
            verdict = why + ("" if f else " NOT FLAT")
        elif name.startswith("WAL"):
            f = max(xs) <= WAL_LIMIT
            ok = ok and f
            verdict = "max %.1f MiB%s" % (max(xs) / 2**20, "" if f else " OVER 16 MiB")
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, xs[0], min(xs), statistics.median(xs), max(xs), xs[-1], verdict))
    print("\nsoak %s" % ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
