#!/usr/bin/env python3
"""loom side by side with its peers and with the machine's own limits.

One command: `python3 bench/compare.py` builds the release preset, installs
the peers from Debian's packages (bench/install-peers.sh), and runs, in
rounds that alternate the systems:

  W1  N independent tasks running `true`: tasks/s       (loom, Dask, Celery, Snakemake;
      loom as `loom up` runs it, prefetching as many tasks as it has slots,
      and as loom-np, with loom-agent's default of no prefetch)
  W2  a chain of tasks: one task's exit → the next one's process start,
      median and p99                                    (the same)
  floor  this machine: posix_spawn of /bin/true one and two at a time, a
      ZeroMQ round trip, a SQLite WAL commit (bench/floor.c)
then, on loom only:
  W3  a fan-out of 10,000 tasks into one fan-in: total time, loomd's peak memory
  W8  loomd's CPU per task during W1 (/proc), and a 100,000-task DAG submitted
      until durable (the run and all its tasks committed)
  W4–W7 through the existing benchmarks (triggers, artifacts, the simulated
      fleet, recovery); skipped with --quick or --skip-loom-only.

It prints a Markdown report (medians, spread, ratios, each loom figure as a
fraction of the floor), writes results.json and plots (gnuplot) into --out,
and stops every daemon it started. Benchmarks, not tests: nothing here
asserts a timing. --quick is the smoke run CI uses.

Slurm (in the default run when this machine can run it): compare.py starts
the one-node test cluster of tests/slurm/ (tests/slurm/slurmcluster.py: a
private munged, slurmctld and slurmd as root on loopback, free ports), runs
bench/peers/slurm_bench.py against it in the same alternating rounds, and
stops every daemon it started, also on failure or Ctrl-C. Slurm's W2 chain
is --slurm-chain long (default 50: one hop costs about a second). See
bench/slurm/README.md.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER_PY = "/usr/bin/python3"  # Debian's Python, where the peers' packages live
PEERS = ("dask", "celery", "snakemake", "slurm")
# loom-np: the same loom with --prefetch 0 (loom-agent's default), beside
# loom as `loom up` runs it (prefetching as many tasks as it has slots).
ALL = ("loom", "loom-np", "floor") + PEERS
DEFAULT = ALL


def log(msg):
    print("compare: " + msg, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="%.0f"):
    return (fmt + "–" + fmt) % (min(xs), max(xs)) if xs else "—"


# ---- loom ---------------------------------------------------------------------


class Loom:
    """One loomd and one agent with one slot per core, kept across rounds."""

    def __init__(self, build, slots, prefetch):
        os.environ["LOOM_BUILD_DIR"] = build
        sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
        sys.path.insert(0, HERE)
        import bench_spine
        from loomtest import Cluster
        self.spine = bench_spine
        self.Cluster = Cluster
        self.c = Cluster(log_level="warn")
        self.c.start_loomd()
        self.agent = self.c.start_agent("bench", slots, extra=["--prefetch", str(prefetch)])
        self.c.wait_agents(["bench"])
        self.submitted = set()

    def w1(self, n):
        name = "wide%d" % n
        if name not in self.submitted:
            self.spine.wide(self.c, n, name)
            self.submitted.add(name)
        cpu0 = self.spine.cpu_seconds(self.c.loomd.pid)
        t0 = time.monotonic()
        run = self.c.wait_run(self.c.start_run(name))
        wall = time.monotonic() - t0
        cpu = self.spine.cpu_seconds(self.c.loomd.pid) - cpu0
        if run["state"] != "succeeded":
            raise SystemExit("compare: loom W1 run ended %s" % run["state"])
        return n / wall, cpu / n * 1e6

    def w2(self, n):
        return self.spine.chain_hops(self.c, n)

    def w3(self, n):
        """n tasks fanned out into one fan-in: seconds, and loomd's peak RSS
        meanwhile (sampled every 5 ms) and VmHWM since its start, in MiB."""
        from benchutil import proc_status_kib
        items = ", ".join(str(i) for i in range(n))
        self.c.submit("pipeline: fan\ntasks:\n  out:\n    foreach: [%s]\n    run: [true]\n"
                      "  in:\n    needs: [out]\n    run: [true]\n" % items)
        pid, peak, stop = self.c.loomd.pid, [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], proc_status_kib(pid, "VmRSS"))
                time.sleep(0.005)
        th = threading.Thread(target=sample)
        th.start()
        t0 = time.monotonic()
        try:
            run = self.c.wait_run(self.c.start_run("fan"))
        finally:
            stop.set()
            th.join()
        wall = time.monotonic() - t0
        if run["state"] != "succeeded":
            raise SystemExit("compare: loom W3 run ended %s" % run["state"])
        return wall, peak[0] / 1024, proc_status_kib(pid, "VmHWM") / 1024

    def close(self):
        self.c.close()


def b36(i):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return out


def w8_submit(n):
    """A fresh loomd with no agent: POST a DAG of n tasks (each needs one
    earlier task, a binary tree) and start a run of it. Both answers come
    after loomd committed (the pipeline, then the run with its n task
    rows), so the sum is "submitted until durable". Task names are short
    (base 36) so that 100,000 tasks fit loomd's 4 MiB limit on a DAG file.
    Seconds: (pipeline, run), and the request's size in bytes."""
    from loomtest import Cluster
    c = Cluster(log_level="warn")
    try:
        c.start_loomd()
        lines = ["pipeline: big\ntasks:\n"]
        for i in range(n):
            lines.append("  t%s: {run: true%s}\n" % (
                b36(i), ", needs: [t%s]" % b36((i - 1) // 2) if i else ""))
        body = json.dumps({"file": "dag.yaml", "source": "".join(lines)}).encode()
        t0 = time.monotonic()
        c.request("POST", "/api/v1/pipelines", body, timeout=120)
        t1 = time.monotonic()
        c.request("POST", "/api/v1/pipelines/big/runs?tasks=0", b"{}", timeout=120)
        t2 = time.monotonic()
        return t1 - t0, t2 - t1, len(body)
    finally:
        c.close()


# ---- the floor and the peers ----------------------------------------------------


def floor(build, n, tmp):
    out = subprocess.run([os.path.join(build, "bench", "loom-bench-floor"), str(n), tmp],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def chain_of(system, args):
    return args.slurm_chain if system == "slurm" else args.chain


def peer(system, args, stamp, tmp, env=None):
    script = os.path.join(HERE, "peers", "%s_bench.py" % system)
    work = tempfile.mkdtemp(prefix="peer-%s-" % system, dir=tmp)
    p = subprocess.run([PEER_PY, script, "--stamp", stamp, "--tmp", work, "--tasks",
                        str(args.tasks), "--chain", str(chain_of(system, args)),
                        "--repeat", "1"],
                       capture_output=True, text=True, timeout=1800, env=env)
    shutil.rmtree(work, ignore_errors=True)
    if p.returncode != 0:
        log("%s failed (exit %d):\n%s" % (system, p.returncode, p.stderr[-3000:]))
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def slurm_cluster_class():
    sys.path.insert(0, os.path.join(ROOT, "tests", "slurm"))
    from slurmcluster import SlurmCluster, SlurmError
    return SlurmCluster, SlurmError


def stop_slurm(cluster):
    """Cancel what is left (a failed or interrupted peer run can leave jobs
    queued or running), give the job steps a moment to end, then stop
    slurmd, slurmctld and munged."""
    log("stopping the Slurm cluster")
    try:
        subprocess.run(["scancel", "--full", "--user=%d" % os.geteuid()], env=cluster.env,
                       capture_output=True, timeout=20)
        end = time.monotonic() + 10
        while time.monotonic() < end and subprocess.run(
                ["squeue", "-h", "-t", "R,CG", "-o", "%i"], env=cluster.env,
                capture_output=True, text=True, timeout=20).stdout.strip():
            time.sleep(0.2)
    except (subprocess.SubprocessError, OSError) as e:
        log("cancelling Slurm jobs failed: %s" % e)
    finally:
        cluster.stop()


def peer_available(system):
    """None when the peer can run here, else why not."""
    if system == "slurm":
        SlurmCluster, _ = slurm_cluster_class()
        return SlurmCluster(tempfile.gettempdir()).missing()
    probe = {"dask": [PEER_PY, "-c", "import distributed"],
             "celery": [PEER_PY, "-c", "import celery, redis"],
             "snakemake": ["snakemake", "--version"],
             "slurm": ["sbatch", "--version"]}[system]
    try:
        ok = subprocess.run(probe, capture_output=True).returncode == 0 and (
            system != "celery" or shutil.which("redis-server") is not None)
    except OSError:
        ok = False
    return None if ok else "not installed"


# ---- the loom-only benchmarks that already exist ----------------------------------


def existing(script, argv, build):
    env = dict(os.environ, LOOM_BUILD_DIR=build)
    cmd = (["bash", os.path.join(HERE, script)] if script.endswith(".sh")
           else [sys.executable, os.path.join(HERE, script)]) + argv
    log("running %s" % " ".join(cmd[1:]))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        return "(%s failed, exit %d: %s)" % (script, p.returncode, p.stderr.strip()[-500:])
    return p.stdout.strip()


def step(name, fn, *a):
    """One loom-only benchmark: its failure is reported, and the rest of
    the run (and what the rounds measured) is kept."""
    try:
        return fn(*a)
    except Exception as e:  # noqa: BLE001 - any failure is reported, not fatal
        log("%s failed: %s: %s" % (name, type(e).__name__, str(e)[:500]))
        return None


def grab(pattern, text, cast=float):
    m = re.search(pattern, text)
    return cast(m.group(1).replace(",", "")) if m else None


# ---- the report ----------------------------------------------------------------------


def plots(out, res, systems):
    """The per-hop latency distribution (CDF) and W1 throughput, with gnuplot."""
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no plots")
        return []
    names = [s for s in systems if res.get(s, {}).get("w2")]
    for s in names:
        hops = sorted(h for run in res[s]["w2"] for h in run)
        with open(os.path.join(out, "hops-%s.dat" % s), "w") as f:
            for i, h in enumerate(hops):
                f.write("%.4f %.5f\n" % (h, (i + 1) / len(hops)))
    with open(os.path.join(out, "w1.dat"), "w") as f:
        for i, s in enumerate(s for s in systems if res.get(s, {}).get("w1")):
            xs = res[s]["w1"]
            f.write('%d "%s" %.1f %.1f %.1f\n' % (i, s, median(xs), min(xs), max(xs)))
        fl = res.get("floor", {}).get("spawn_two_per_s")
        if fl:
            f.write('%d "%s" %.1f %.1f %.1f\n' % (
                len([s for s in systems if res.get(s, {}).get("w1")]), "spawn x2 (floor)",
                median(fl), min(fl), max(fl)))
    gp = os.path.join(out, "plots.gp")
    with open(gp, "w") as f:
        f.write("set terminal pngcairo size 900,540 font 'DejaVu Sans,11'\n"
                "set output '%s/hops.png'\nset logscale x\nset grid\n"
                "set xlabel 'exit → next process start (ms, log scale)'\n"
                "set ylabel 'fraction of hops'\nset key bottom right\n"
                "set title 'W2: chain hop latency, all rounds'\n" % out)
        f.write("plot " + ", ".join("'%s/hops-%s.dat' using 1:2 with lines lw 2 title '%s'" % (
            out, s, s) for s in names) + "\n")
        f.write("set output '%s/w1.png'\nunset logscale\nset logscale y\n"
                "set style fill solid 0.6\nset boxwidth 0.6\nset key off\n"
                "set ylabel 'tasks/s (log scale)'\nset xlabel ''\nset yrange [1:*]\n"
                "set title 'W1: 1,000 independent `true` tasks (bar: median; line: min–max)'\n"
                "plot '%s/w1.dat' using 1:3:xtic(2) with boxes, "
                "'' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0\n" % (out, out))
    p = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if p.returncode != 0:
        log("gnuplot failed: %s" % p.stderr.strip()[-500:])
        return []
    return [os.path.join(out, "hops.png"), os.path.join(out, "w1.png")]


def ratio_text(loom_better_when_larger, peer_side):
    """"loom N× faster", or says that the peer was faster; "—" without loom.
    Both arguments are oriented so that a ratio above 1 favours loom."""
    if not (loom_better_when_larger > 0 and peer_side > 0):
        return "—"
    r = loom_better_when_larger / peer_side
    return "loom %.1f× faster" % r if r >= 1 else "loom %.2f× (peer faster)" % r


def report(args, res, systems, extra, load):
    P = print
    fl = res.get("floor", {})
    loom = res.get("loom", {})
    P("# loom beside its peers and the floor\n")
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    P("Machine: %s, %d cores, Linux %s. Load average before / after: %s / %s. "
      "%d rounds, systems alternating (order rotated each round); W1 = %d tasks, "
      "W2 = chain of %d%s.\n" % (
          cpu, os.cpu_count(), os.uname().release, load[0], load[1], args.repeat, args.tasks,
          args.chain, " (Slurm: chain of %d, --slurm-chain)" % args.slurm_chain
          if "slurm" in systems else ""))
    P("Versions: " + "; ".join("%s %s" % (s, res[s].get("version", "?")) for s in systems
                                if s in PEERS and res.get(s)) + "\n")
    P("| workload | system | median | spread (min–max) | loom's ratio |")
    P("|---|---|---|---|---|")
    l1 = median(loom.get("w1", []))
    for s in systems:
        xs = res.get(s, {}).get("w1")
        if not xs:
            continue
        ratio = ratio_text(l1, median(xs)) if s != "loom" else "—"
        P("| W1 tasks/s | %s | **%.0f** | %s | %s |" % (s, median(xs), spread(xs), ratio))
    if fl:
        two, seq = median(fl["spawn_two_per_s"]), median(fl["spawn_seq_per_s"])
        P("| W1 tasks/s | floor: posix_spawn `true` two at a time | **%.0f** | %s | "
          "loom at %.0f%% of it |" % (two, spread(fl["spawn_two_per_s"]), 100 * l1 / two))
        P("| W1 tasks/s | floor: posix_spawn `true` one at a time | %.0f | %s | — |" % (
            seq, spread(fl["spawn_seq_per_s"])))
    hop = {}
    for s in systems:
        runs = res.get(s, {}).get("w2")
        if runs:
            from benchutil import pct
            hop[s] = ([median(r) for r in runs], [pct(r, 99) for r in runs])
    lh = median(hop["loom"][0]) if "loom" in hop else float("nan")
    for s, (meds, p99s) in hop.items():
        ratio = ratio_text(median(meds), lh) if s != "loom" else "—"
        P("| W2 hop median / p99 (ms) | %s | **%.2f** / %.2f | %s / %s | %s |" % (
            s, median(meds), median(p99s), spread(meds, "%.2f"), spread(p99s, "%.2f"), ratio))
    if fl:
        rtt = median(fl["zmq_rtt_us"]) / 1000
        commit = 1000 / median(fl["sqlite_commit_per_s"])
        spawn = 1000 / median(fl["spawn_seq_per_s"])
        fh = spawn + rtt + commit
        P("| W2 hop (ms) | floor: one spawn + one ZeroMQ round trip + one commit | "
          "**%.2f** (%.2f + %.3f + %.3f) | — | loom hop = %.1f× the floor |" % (
              fh, spawn, rtt, commit, lh / fh))
        P("| floor | ZeroMQ REQ/REP round trip, 127.0.0.1 | %.0f µs | %s | — |" % (
            median(fl["zmq_rtt_us"]), spread(fl["zmq_rtt_us"])))
        P("| floor | SQLite WAL commit, 1 row / 100 rows (synchronous=NORMAL) | "
          "%.0f / %.0f commits/s (%.0f rows/s) | — | — |" % (
              median(fl["sqlite_commit_per_s"]), median(fl["sqlite_batch100_commit_per_s"]),
              median(fl["sqlite_batch100_rows_per_s"])))
    for s in ("loom", "loom-np"):
        xs = res.get(s, {}).get("w8_cpu_us")
        if xs:
            P("| W8 loomd CPU per task during W1 | %s | **%.1f µs** | %s | target ≤ 25 µs |" % (
                s, median(xs), spread(xs, "%.1f")))
    if loom.get("w3"):
        wall, peak, hwm = loom["w3"]
        P("| W3 fan-out of %d → one fan-in | loom | **%.2f s** (%.0f tasks/s); loomd peak "
          "RSS %.1f MiB (VmHWM since start %.1f MiB) | one run | target < 200 MB |" % (
              args.fanout, wall, (args.fanout + 1) / wall, peak, hwm))
    if loom.get("w8_submit"):
        pipe, run, size = loom["w8_submit"]
        P("| W8 submit a %d-task DAG until durable | loom | **%.2f s** (pipeline %.2f s + "
          "run with its tasks %.2f s; %.1f MB of JSON) | one run | target < 1 s |" % (
              args.dag, pipe + run, pipe, run, size / 1e6))
    if res.get("slurm", {}).get("cluster"):
        P("\nSlurm: %s." % res["slurm"]["cluster"])
    for title, text in extra:
        P("\n## %s\n\n%s" % (title, text))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 round, 100 tasks, chain of 20, fan-out of 500, "
                         "a 5,000-task DAG, no W4–W7")
    ap.add_argument("--systems", default=",".join(DEFAULT),
                    help="comma-separated, of %s (default: %s)" % (
                        ", ".join(ALL), ",".join(DEFAULT)))
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--loom-prefetch", type=int, default=os.cpu_count(),
                    help="loom's agent --prefetch (default: its slots, as `loom up` runs it; "
                         "loom-np runs with 0)")
    ap.add_argument("--chain", type=int, default=200)
    ap.add_argument("--slurm-chain", type=int, default=50,
                    help="Slurm's W2 chain (default 50: about a second a hop)")
    ap.add_argument("--fanout", type=int, default=10000)
    ap.add_argument("--dag", type=int, default=100000)
    ap.add_argument("--skip-loom-only", action="store_true", help="skip W3, W8's submit and W4–W7")
    ap.add_argument("--no-build", action="store_true", help="use the binaries in --build")
    ap.add_argument("--no-install", action="store_true", help="do not run bench/install-peers.sh")
    ap.add_argument("--build", default=os.environ.get("LOOM_BUILD_DIR",
                                                       os.path.join(ROOT, "build", "release")))
    ap.add_argument("--out", default=None, help="where results.json and the plots go "
                                                "(default: a new folder under /tmp)")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.tasks, args.chain, args.fanout, args.dag = 1, 100, 20, 500, 5000
        args.skip_loom_only = True
        args.slurm_chain = min(args.slurm_chain, 10)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in ALL]
    if bad:
        ap.error("--systems: unknown %s (known: %s)" % (", ".join(bad), ", ".join(ALL)))
    args.build = os.path.abspath(args.build)
    # SIGTERM (a timeout, a kill) goes through the finally below like Ctrl-C,
    # so every daemon started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("compare: terminated"))
    out = args.out or tempfile.mkdtemp(prefix="loom-compare-")
    os.makedirs(out, exist_ok=True)

    if not args.no_build:
        log("building the release preset")
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "--preset", "release", "-j%d" % os.cpu_count()],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wanted_peers = [s for s in systems if s in PEERS and s != "slurm"]
    if wanted_peers and not args.no_install:
        subprocess.run(["bash", os.path.join(HERE, "install-peers.sh")], check=False)
    for s in list(systems):
        why = peer_available(s) if s in PEERS else None
        if why:
            log("%s is not available here (%s): left out (see %s)" % (
                s, why, "bench/slurm/README.md" if s == "slurm" else "bench/install-peers.sh"))
            systems.remove(s)

    stamp = os.path.join(args.build, "bench", "loom-bench-stamp")
    tmp = tempfile.mkdtemp(prefix="loom-compare-work-")
    res = {s: {} for s in systems}
    load = [loadavg(), None]
    loom = None
    looms = {}
    slurm = None
    try:
        if "slurm" in systems:
            SlurmCluster, SlurmError = slurm_cluster_class()
            log("starting the one-node Slurm cluster of tests/slurm/")
            slurm = SlurmCluster(os.path.join(tmp, "slurm"))
            try:
                slurm.start()
            except SlurmError as e:
                log(str(e))  # slurm stays in systems: no figures, exit status 1
                slurm = None
            else:
                res["slurm"]["cluster"] = (
                    "one node started by this run from tests/slurm/slurm.conf.in (%d CPUs, "
                    "partition OverSubscribe=FORCE:8, sched/backfill with batch_sched_delay=0, "
                    "sched_min_interval=0, default_queue_depth=1000; MinJobAge=300); "
                    "W1 as one job array, W2 as --dependency=afterok jobs" % slurm.cpus)
        if "loom" in systems:
            loom = looms["loom"] = Loom(args.build, os.cpu_count(), args.loom_prefetch)
        if "loom-np" in systems:
            looms["loom-np"] = Loom(args.build, os.cpu_count(), 0)
        order = list(systems)
        for r in range(args.repeat):
            for s in order:
                log("round %d/%d: %s (load %s)" % (r + 1, args.repeat, s, loadavg()))
                if s in looms:
                    rate, cpu_us = looms[s].w1(args.tasks)
                    res[s].setdefault("w1", []).append(rate)
                    res[s].setdefault("w8_cpu_us", []).append(cpu_us)
                    res[s].setdefault("w2", []).append(looms[s].w2(args.chain))
                elif s == "floor":
                    f = floor(args.build, max(200, args.tasks), tmp)
                    for k, v in f.items():
                        res[s].setdefault(k, []).append(v)
                elif s != "slurm" or slurm:
                    got = peer(s, args, stamp, tmp, slurm.env if s == "slurm" else None)
                    if got:
                        res[s]["version"] = got["version"]
                        res[s].setdefault("w1", []).extend(got["w1"])
                        res[s].setdefault("w2", []).extend(got["w2"])
            order = order[1:] + order[:1]  # alternate who goes first
        if slurm:  # not needed by the loom-only workloads: stop it before them
            stop_slurm(slurm)
            slurm = None
        if "loom-np" in looms:
            looms.pop("loom-np").close()
        if loom and not args.skip_loom_only or args.quick and loom:
            log("W3: fan-out of %d" % args.fanout)
            res["loom"]["w3"] = step("W3", loom.w3, args.fanout)
        if loom:
            loom.close()
            loom = None
            log("W8: submitting a %d-task DAG" % args.dag)
            res["loom"]["w8_submit"] = step("W8", w8_submit, args.dag)
        extra = []
        if "loom" in systems and not args.skip_loom_only:
            extra.append(("W4: trigger → first process",
                          existing("bench_triggers.py", ["-n", "200"], args.build)))
            extra.append(("W5: 2 GiB of output, a 4 GiB artifact",
                          existing("bench_artifacts.py", [], args.build)))
            extra.append(("W6: 1,000 simulated agents, 100,000 tasks",
                          existing("fleet.sh", ["--no-build"], args.build)))
            extra.append(("W7: restart recovery",
                          existing("bench_recovery.py", [], args.build)))
    finally:
        for k in list(looms):
            if looms[k] is not loom:
                looms.pop(k).close()
        if loom:
            loom.close()
        if slurm:
            stop_slurm(slurm)
        shutil.rmtree(tmp, ignore_errors=True)
    load[1] = loadavg()
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "load": load, "results": res}, f)
    report(args, res, systems, extra, load)
    pngs = plots(out, res, systems)
    print("\nResults: %s%s" % (os.path.join(out, "results.json"),
                               "; plots: " + ", ".join(pngs) if pngs else ""))
    missing = [s for s in systems if not any(k != "cluster" for k in res.get(s, {}))]
    if missing:
        log("no figures from %s (see above)" % ", ".join(missing))
        sys.exit(1)


if __name__ == "__main__":
    main()
