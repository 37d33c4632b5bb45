"""Fault injection: loomd killed at its dangerous instants, and agents that
talk to loomd through a proxy that loses, duplicates, delays and reorders
messages. Real processes; the checks read the database itself.

The kills are placed with LOOM_FAULT=POINT:N (scheduler/fault.h): loomd
raises SIGKILL on its N-th pass through POINT. The pass counts come from a
seeded generator, printed, so a failure can be replayed.
"""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import BUILD, Cluster, wait_for  # noqa: E402

FAULTPROXY = os.path.join(BUILD, "tests", "faultproxy")
TERMINAL = ("succeeded", "failed", "cancelled")


class FaultCluster(Cluster):
    """A Cluster whose loomd may be armed with a fault point, and whose
    agents may be pointed at a proxy instead of loomd."""

    agent_server = None  # set to the proxy's endpoint to route agents through it

    def start_loomd(self, extra=(), fault=None):
        # loomd inherits the environment; LOOM_FAULT is set only around the
        # spawn so agents started later never see it.
        old = os.environ.pop("LOOM_FAULT", None)
        if fault:
            os.environ["LOOM_FAULT"] = fault
        try:
            return super().start_loomd(extra)
        finally:
            os.environ.pop("LOOM_FAULT", None)
            if old is not None:
                os.environ["LOOM_FAULT"] = old

    def start_agent(self, name, slots=2, extra=(), env=None):
        if not self.agent_server:
            return super().start_agent(name, slots, extra, env)
        saved, self.zmq = self.zmq, self.agent_server
        try:
            return super().start_agent(name, slots, extra, env)
        finally:
            self.zmq = saved

    def db(self):
        return os.path.join(self.state, "loom.db")

    def query(self, sql, args=()):
        # Read-only: the checks must not repair what they inspect.
        con = sqlite3.connect("file:%s?mode=ro" % self.db(), uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def integrity(self):
        return self.query("PRAGMA integrity_check")


def layered_dag(name, trace, layers, width):
    """layers x width tiny tasks; each task of a layer needs two of the one
    before, so completions release dispatches all along the run. Each task
    appends its name to $TRACE, so executions can be counted."""
    lines = ["pipeline: %s" % name, "env:", "  TRACE: %s" % trace, "tasks:"]
    for layer in range(layers):
        for i in range(width):
            lines.append("  t%02d_%02d:" % (layer, i))
            lines.append('    run: echo "$LOOM_TASK" >> "$TRACE"; echo out %d %d' % (layer, i))
            if layer:
                lines.append("    needs: [t%02d_%02d, t%02d_%02d]" % (
                    layer - 1, i, layer - 1, (i + 1) % width))
    return "\n".join(lines) + "\n"


def flat_dag(name, trace, n):
    lines = ["pipeline: %s" % name, "env:", "  TRACE: %s" % trace, "tasks:"]
    for i in range(n):
        lines.append("  t%04d:" % i)
        lines.append('    run: echo "$LOOM_TASK" >> "$TRACE"')
    return "\n".join(lines) + "\n"


def read_trace(path):
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                counts[line.strip()] = counts.get(line.strip(), 0) + 1
    except FileNotFoundError:
        pass
    return counts


class FaultTestCase(unittest.TestCase):
    def setUp(self):
        self.c = FaultCluster()

    def tearDown(self):
        failed = self._failed()
        if failed:
            print(self.c.logs())
        if self.c.loomd and self.c.loomd.poll() is not None:
            self.c.loomd = None  # died from a fault: nothing to stop
        self.c.close(keep=failed)
        if failed:
            print("kept", self.c.tmp)

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in result.errors + result.failures)

    def check_run_recorded_once(self, run_id, n_tasks, trace):
        """The invariants a user relies on after any crash: the run ended
        well, each task has exactly one succeeded attempt and it is the
        task's current one, nothing is left in flight, and every task that
        has a single attempt ran exactly once."""
        c = self.c
        self.assertEqual(c.query("SELECT state FROM runs WHERE id = ?", (run_id,)),
                         [("succeeded",)])
        tasks = c.query("SELECT id, name, state, current_attempt FROM tasks WHERE run_id = ?",
                        (run_id,))
        self.assertEqual(len(tasks), n_tasks)
        self.assertEqual({t[2] for t in tasks}, {"succeeded"})
        ok = dict(c.query("SELECT task_id, COUNT(*) FROM attempts WHERE run_id = ? "
                          "AND state = 'succeeded' GROUP BY task_id", (run_id,)))
        twice = {t[1]: ok.get(t[0], 0) for t in tasks if ok.get(t[0], 0) != 1}
        self.assertEqual(twice, {}, "tasks without exactly one succeeded attempt")
        current = dict(c.query("SELECT task_id, id FROM attempts WHERE run_id = ? "
                               "AND state = 'succeeded'", (run_id,)))
        for tid, name, _, cur in tasks:
            self.assertEqual(cur, current[tid], "task %s: current attempt" % name)
        in_flight = c.query("SELECT id, state FROM attempts WHERE run_id = ? AND state NOT IN "
                            "('succeeded', 'failed', 'lost', 'cancelled')", (run_id,))
        self.assertEqual(in_flight, [], "attempts left in flight")
        self.assertEqual(c.query("SELECT id FROM runs WHERE state IN ('queued', 'running')"), [])
        attempts = dict(c.query("SELECT t.name, COUNT(a.id) FROM tasks t JOIN attempts a "
                                "ON a.task_id = t.id WHERE t.run_id = ? GROUP BY t.id",
                                (run_id,)))
        ran = read_trace(trace)
        for _, name, _, _ in tasks:
            self.assertGreaterEqual(ran.get(name, 0), 1, "task %s never ran" % name)
            # A process runs only for an attempt, so never more often than
            # the attempts recorded for it.
            self.assertLessEqual(ran.get(name, 0), attempts[name], "task %s ran extra" % name)
        self.assertEqual(c.integrity(), [("ok",)])


class KillAtFaultPoints(FaultTestCase):
    """loomd SIGKILLed at a chosen pass through a fault point, restarted,
    killed again, and so on, while a 200-task DAG runs."""

    LAYERS, WIDTH = 10, 20
    KILLS = 4

    def kill_and_restart(self, point, lo, hi, seed):
        c = self.c
        rng = random.Random(seed)
        counts = [rng.randint(lo, hi) for _ in range(self.KILLS)]
        print("\n%s: seed=%d pass counts %s" % (point, seed, counts))
        trace = os.path.join(c.tmp, "trace")
        c.start_loomd(fault="%s:%d" % (point, counts[0]))
        c.start_agent("a1", slots=4)
        c.start_agent("a2", slots=4)
        c.wait_agents(["a1", "a2"])
        n = self.LAYERS * self.WIDTH
        c.submit(layered_dag("faulty", trace, self.LAYERS, self.WIDTH))
        run_id = c.start_run("faulty")

        kills = 0
        end = time.monotonic() + 120
        while True:
            self.assertLess(time.monotonic(), end, "run did not end; %d kills" % kills)
            died = c.loomd.poll() is not None
            if died:
                self.assertEqual(c.loomd.returncode, -signal.SIGKILL)
                kills += 1
                c.loomd = None
                # The database as the crash left it, before anything repairs it.
                self.assertEqual(c.integrity(), [("ok",)], "after kill %d" % kills)
                fault = "%s:%d" % (point, counts[kills]) if kills < len(counts) else None
                c.start_loomd(fault=fault)
                continue
            try:
                run = c.get("/api/v1/runs/%d?wait=1" % run_id)
            except OSError:
                continue  # loomd died while answering
            if run["state"] not in ("queued", "running"):
                break
        with open(os.path.join(c.tmp, "loomd.log"), errors="replace") as f:
            self.assertEqual(f.read().count("fault injection: SIGKILL at %s" % point), kills)
        print("%s: %d kills, run %s" % (point, kills, run["state"]))
        # The pass counts are well below what the run needs, so most planned
        # kills happen (the last may not, when the run ends first); fewer
        # than two would prove little.
        self.assertGreaterEqual(kills, 2, "planned %d kills" % self.KILLS)
        self.assertEqual(run["state"], "succeeded", run.get("error"))
        self.check_run_recorded_once(run_id, n, trace)
        # Still serving and consistent after a clean stop.
        self.assertEqual(c.stop_loomd(), 0)
        self.assertEqual(c.integrity(), [("ok",)])

    # A kill here loses the Dispatches of the committed turn: on restart the
    # agents' Hellos do not list them, and loomd must retry them without
    # losing the retries too (it once did, all in one Hello).
    def test_kill_after_commit_before_send(self):
        self.kill_and_restart("after_commit_before_send", 4, 20, seed=8)

    def test_kill_after_result_before_commit(self):
        self.kill_and_restart("after_result_before_commit", 5, 30, seed=9)


class BadFaultSpec(unittest.TestCase):
    def test_bad_loom_fault_refuses_to_start(self):
        c = FaultCluster()
        try:
            for spec, want in (("nowhere:3", 'unknown point "nowhere"'),
                               ("after_commit_before_send", "want POINT:N with N >= 1"),
                               ("after_result_before_commit:0", "want POINT:N with N >= 1")):
                p = subprocess.run(
                    [os.path.join(BUILD, "loomd"), "--state-dir", c.state, "--http",
                     "127.0.0.1:0", "--bind", "tcp://127.0.0.1:*"],
                    capture_output=True, text=True, timeout=30,
                    env=dict(os.environ, LOOM_FAULT=spec))
                self.assertEqual(p.returncode, 1, spec)
                self.assertIn('LOOM_FAULT="%s"' % spec, p.stderr)
                self.assertIn(want, p.stderr)
        finally:
            c.close()


class ProxyCase(FaultTestCase):
    """Agents started after start_proxy reach loomd through faultproxy."""

    def start_proxy(self, *rates, seed=1):
        c = self.c
        addr = os.path.join(c.tmp, "proxy.addr")
        log = open(os.path.join(c.tmp, "faultproxy.log"), "ab")
        self.proxy = subprocess.Popen(
            [FAULTPROXY, "--connect", c.zmq, "--addr-file", addr, "--seed", str(seed),
             "--verbose", "--curve-secret-file",
             os.path.join(c.state, "curve", "server.key")] + list(rates),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def ready():
            if self.proxy.poll() is not None:
                raise AssertionError("faultproxy exited with %s" % self.proxy.returncode)
            try:
                with open(addr) as f:
                    return f.read().strip()
            except FileNotFoundError:
                return None
        c.agent_server = wait_for(ready, "faultproxy to listen")

    def tearDown(self):
        p = getattr(self, "proxy", None)
        if p:
            p.terminate()
            p.wait(timeout=30)
        super().tearDown()


class LossyNetwork(ProxyCase):
    """Agents reach loomd only through faultproxy."""

    # A lost Finished or LogChunk is sent again when loomd has not
    # acknowledged it for a while (agent_resend_stale), not only after a new
    # Welcome; a lost Dispatch is found by the heartbeat's reconciliation.
    def test_1000_tasks_through_drops_duplicates_delays_and_reorders(self):
        c = self.c
        c.start_loomd()
        self.start_proxy("--drop", "0.05", "--dup", "0.05", "--delay", "0.10",
                         "--delay-max", "200", "--reorder", "0.02", seed=1000)
        for name in ("a1", "a2"):
            c.start_agent(name, slots=8)
        c.wait_agents(["a1", "a2"])
        n = 1000
        trace = os.path.join(c.tmp, "trace")
        c.submit(flat_dag("lossy", trace, n))
        run_id = c.start_run("lossy")
        # Generous overall, but a run that makes no progress for 15 s (four
        # agent timeouts) is stuck, not slow.
        end = time.monotonic() + 50
        done, progress_at = -1, time.monotonic()
        while True:
            run = c.get("/api/v1/runs/%d?wait=1" % run_id)
            if run["state"] not in ("queued", "running"):
                break
            now_done = sum(t["state"] in TERMINAL for t in run["tasks"])
            if now_done != done:
                done, progress_at = now_done, time.monotonic()
            if time.monotonic() > end or time.monotonic() - progress_at > 15:
                waiting = [(t["name"], t["state"], t.get("agent"), t.get("attempts"))
                           for t in run["tasks"] if t["state"] not in TERMINAL]
                self.fail("run still %s, no progress for %.0f s; %d tasks not done, e.g. %s" % (
                    run["state"], time.monotonic() - progress_at, len(waiting), waiting[:10]))
        self.assertEqual(run["state"], "succeeded", run.get("error"))
        self.check_run_recorded_once(run_id, n, trace)


class Partition(ProxyCase):
    """One agent (a1) reaches loomd through faultproxy, the other (a2)
    directly; the proxy cuts a1 off (SIGUSR1) and heals it (SIGUSR2)."""

    def gated(self, name):
        c = self.c
        self.go = os.path.join(c.tmp, name + ".go")
        self.pids = os.path.join(c.tmp, name + ".pids")
        c.submit("pipeline: %s\ntasks:\n  t:\n    resources: {labels: {via: proxy}}\n"
                 "    run: echo $$ >> %s; while [ ! -e %s ]; do sleep 0.02; done;"
                 " echo done on $LOOM_ATTEMPT\n" % (name, self.pids, self.go))
        return c.start_run(name)

    def start(self):
        c = self.c
        c.start_loomd()
        c.start_agent("a2", slots=2)
        self.start_proxy(seed=7)
        c.start_agent("a1", slots=2, extra=["--label", "via=proxy"])
        c.wait_agents(["a1", "a2"])

    def attempts(self, run_id):
        return [(a["agent"], a["state"]) for a in
                self.c.get("/api/v1/runs/%d/tasks/t/attempts" % run_id)["attempts"]]

    def running_on_a1(self, run_id):
        return self.attempts(run_id) == [("a1", "running")]

    def test_a_cut_longer_than_the_timeout_retries_elsewhere_and_fences(self):
        c = self.c
        self.start()
        run_id = self.gated("cut")
        wait_for(lambda: self.running_on_a1(run_id), "the task to run on a1")
        self.proxy.send_signal(signal.SIGUSR1)
        cut_s = 30 if os.environ.get("LOOM_SOAK") else 5  # > --agent-timeout 3s
        start = time.monotonic()
        wait_for(lambda: [s for _, s in self.attempts(run_id)][:1] == ["lost"],
                 "a1 to be declared lost", timeout=cut_s + 10)
        self.assertGreater(time.monotonic() - start, 2.5, "lost before the agent timeout")
        time.sleep(max(0, cut_s - (time.monotonic() - start)))  # the partition itself
        self.proxy.send_signal(signal.SIGUSR2)
        c.wait_agents(["a1", "a2"])
        # The retry needs an agent labelled via=proxy: a1, once it is back,
        # where loomd's Welcome has cancelled the old attempt (fenced).
        open(self.go, "w").close()
        run = c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        att = self.attempts(run_id)
        self.assertEqual(att[0], ("a1", "lost"))
        self.assertEqual(att[-1][1], "succeeded")
        self.assertEqual(sum(1 for _, s in att if s == "succeeded"), 1)
        self.assertEqual(c.log(run_id, "t"), b"done on %d\n" % len(att))

    def test_a_cut_shorter_than_the_timeout_restarts_nothing(self):
        c = self.c
        self.start()
        run_id = self.gated("blip")
        wait_for(lambda: self.running_on_a1(run_id), "the task to run on a1")
        self.proxy.send_signal(signal.SIGUSR1)
        time.sleep(1.0)  # the partition itself, well under --agent-timeout 3s
        self.proxy.send_signal(signal.SIGUSR2)
        open(self.go, "w").close()
        run = c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.attempts(run_id), [("a1", "succeeded")])
        with open(self.pids) as f:
            self.assertEqual(len(f.read().split()), 1)


if __name__ == "__main__":
    unittest.main()
