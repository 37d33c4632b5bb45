"""Fault injection: loomd and agents killed at random instants, loomd down
while tasks run. Each test states a promise of docs/guarantees.md and fails
if it breaks. Random choices are seeded; the seed is printed (set
LOOM_CHAOS_SEED to replay one). LOOM_SOAK=1 scales the runs up."""
import os
import random
import signal
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import Cluster, DEADLINE, failure_of, print_failure_last, wait_for  # noqa: E402

SOAK = os.environ.get("LOOM_SOAK") == "1"


def seed_from_env():
    s = os.environ.get("LOOM_CHAOS_SEED")
    return int(s) if s else random.SystemRandom().randrange(1 << 32)


def integrity(db_path):
    """PRAGMA integrity_check through a read-only connection: loomd uses WAL,
    so this reads a consistent snapshot whether loomd runs or lies dead."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=DEADLINE)
    try:
        return [r[0] for r in db.execute("PRAGMA integrity_check")]
    finally:
        db.close()


def query(db_path, sql, args=()):
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=DEADLINE)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class ChaosTest(unittest.TestCase):
    CLUSTER = {}

    def setUp(self):
        self.seed = seed_from_env()
        self.rng = random.Random(self.seed)
        self.c = Cluster(**self.CLUSTER)
        self.c.start_loomd()
        self.db = os.path.join(self.c.state, "loom.db")
        self.stray = []  # task processes an agent killed with SIGKILL may leave behind

    def tearDown(self):
        failed = failure_of(self) is not None
        if failed:
            print(self.c.logs())
            print("%s: LOOM_CHAOS_SEED=%d (logs and state kept in %s)"
                  % (self.id(), self.seed, self.c.tmp))
            print_failure_last(self)
        for pid in self.stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.c.close(keep=failed)

    def attempts(self, run_id, task):
        return self.c.get("/api/v1/runs/%d/tasks/%s/attempts" % (run_id, task))["attempts"]


class SchedulerKills(ChaosTest):
    """loomd SIGKILLed at random instants while a 500-task DAG runs."""
    CLUSTER = dict(heartbeat="100ms", agent_timeout="3s", log_level="info")
    KILLS = 200 if SOAK else 20
    LAYERS, WIDTH = 5, 100
    AGENTS = {"a1": (4, []), "a2": (4, [])}  # name: (slots, extra arguments)

    def pipeline(self):
        # Five layers of 100; each task needs its column's task in the layer
        # above and, for some, a neighbour's, so completions unlock work all
        # the time. Every execution appends "run task attempt-id".
        self.execs = os.path.join(self.c.tmp, "execs")
        lines = ["pipeline: big", "tasks:"]
        for layer in range(self.LAYERS):
            for i in range(self.WIDTH):
                lines.append("  t%d_%03d:" % (layer, i))
                lines.append("    run: echo $LOOM_RUN_ID $LOOM_TASK $LOOM_ATTEMPT_ID >> %s;"
                             " sleep 0.02" % self.execs)
                if layer:
                    needs = {"t%d_%03d" % (layer - 1, i), "t%d_%03d" % (layer - 1, (i * 7) % 100)}
                    lines.append("    needs: [%s]" % ", ".join(sorted(needs)))
        return "\n".join(lines) + "\n"

    def run_active(self, run_id):
        rows = query(self.db, "SELECT state FROM runs WHERE id = ?", (run_id,))
        return bool(rows) and rows[0][0] in ("queued", "running")

    def test_loomd_killed_at_random_instants_loses_and_doubles_nothing(self):
        print("\n%s: LOOM_CHAOS_SEED=%d kills=%d" % (self.id(), self.seed, self.KILLS))
        for name, (slots, extra) in self.AGENTS.items():
            self.c.start_agent(name, slots, extra=extra)
        self.c.wait_agents(list(self.AGENTS))
        self.c.submit(self.pipeline())
        runs = [self.c.start_run("big")]
        started = time.monotonic()
        kills = 0
        progress = []  # tasks succeeded at each kill, as the crash left them
        while kills < self.KILLS:
            # Every kill must land while a run is in flight: if the DAG ran
            # out, start another one so no kill is wasted on an idle loomd.
            if not self.run_active(runs[-1]):
                self.assertEqual(query(self.db, "SELECT state FROM runs WHERE id = ?",
                                       (runs[-1],)), [("succeeded",)], "run %d" % runs[-1])
                runs.append(self.c.start_run("big"))
            # Half the kills land during recovery (0-150 ms after loomd
            # listens), half once the agents are back and results flow.
            if self.rng.random() < 0.5:
                self.c.wait_agents(list(self.AGENTS))
            time.sleep(self.rng.uniform(0, 0.150))  # the random instant itself
            self.assertEqual(self.c.stop_loomd(signal.SIGKILL), -signal.SIGKILL)
            kills += 1
            self.assertEqual(integrity(self.db), ["ok"], "after kill %d" % kills)
            progress.append(query(self.db, "SELECT COUNT(*) FROM tasks WHERE state = "
                                           "'succeeded'")[0][0])
            self.c.start_loomd()
            self.assertEqual(integrity(self.db), ["ok"], "after restart %d" % kills)
        print("%d kills in %.1fs over %d run(s); tasks done at each kill: %s"
              % (kills, time.monotonic() - started, len(runs), progress))

        # Left alone, every run finishes and succeeds.
        for run_id in runs:
            end = time.monotonic() + DEADLINE * (4 if SOAK else 1)
            while self.run_active(run_id):
                self.assertLess(time.monotonic(), end, "run %d is stuck" % run_id)
                self.c.get("/api/v1/runs/%d?wait=5" % run_id)
            run = self.c.get("/api/v1/runs/%d" % run_id)
            self.assertEqual(run["state"], "succeeded", run_id)
            self.assertEqual(len(run["tasks"]), self.LAYERS * self.WIDTH)
        self.assertEqual(integrity(self.db), ["ok"])
        self.assertEqual(query(self.db, "SELECT id, state FROM runs WHERE state IN "
                                        "('queued', 'running')"), [])

        # The database's final state: every task succeeded through exactly one
        # succeeded attempt, which is its current one.
        rows = query(self.db, "SELECT t.run_id, t.name, t.state, t.attempts, t.current_attempt,"
                              " (SELECT COUNT(*) FROM attempts a WHERE a.task_id = t.id),"
                              " (SELECT COUNT(*) FROM attempts a WHERE a.task_id = t.id"
                              "   AND a.state = 'succeeded'),"
                              " (SELECT a.id FROM attempts a WHERE a.task_id = t.id"
                              "   AND a.state = 'succeeded')"
                              " FROM tasks t WHERE t.run_id IN (%s)" % ",".join(map(str, runs)))
        self.assertEqual(len(rows), len(runs) * self.LAYERS * self.WIDTH)
        attempt_of = {}
        retried = 0
        for run_id, name, state, n, current, n_rows, n_ok, ok_id in rows:
            where = "run %d task %s" % (run_id, name)
            self.assertEqual((state, n_ok), ("succeeded", 1), where)
            self.assertEqual(current, ok_id, where)
            self.assertEqual(n, n_rows, where)
            retried += n > 1
            attempt_of[(run_id, name)] = ok_id
        unfinished = query(self.db, "SELECT id, state FROM attempts WHERE run_id IN (%s) AND "
                                    "state NOT IN ('succeeded', 'lost', 'failed', 'cancelled')"
                           % ",".join(map(str, runs)))
        self.assertEqual(unfinished, [])

        # What really ran: every execution belongs to an attempt loomd
        # recorded for that task, no attempt ran twice, and each task's
        # succeeded attempt is one that ran.
        known = {(r, n, a) for r, n, a in query(
            self.db, "SELECT a.run_id, t.name, a.id FROM attempts a JOIN tasks t ON t.id = "
                     "a.task_id WHERE a.run_id IN (%s)" % ",".join(map(str, runs)))}
        seen = set()
        for line in read_text(self.execs).splitlines():
            run_id, name, attempt = line.split()
            key = (int(run_id), name, int(attempt))
            self.assertIn(key, known, "an execution loomd has no attempt for")
            self.assertNotIn(key, seen, "attempt executed twice")
            seen.add(key)
        for (run_id, name), ok_id in attempt_of.items():
            self.assertIn((run_id, name, ok_id), seen, "succeeded attempt that never ran")
        print("%d tasks, %d executions, %d tasks with more than one attempt"
              % (len(rows), len(seen), retried))


class SchedulerKillsPrefetch(SchedulerKills):
    """The same, with agents holding tasks beyond their slots (prefetch) and
    one that does not, so held attempts, hand-backs and their answers are
    cut by kills too."""
    KILLS = 100 if SOAK else 10
    AGENTS = {"a1": (2, ["--prefetch", "2"]), "a2": (2, ["--prefetch", "1"]), "a3": (1, [])}


class AgentKills(ChaosTest):
    CLUSTER = dict(heartbeat="100ms", agent_timeout="1s")

    def test_agent_killed_while_its_task_writes_fast_keeps_every_acked_byte(self):
        print("\n%s: LOOM_CHAOS_SEED=%d" % (self.id(), self.seed))
        pids = os.path.join(self.c.tmp, "pids")
        # Attempt 1 prints numbered lines as fast as the shell can until its
        # agent dies; the retry prints 100 and ends.
        self.c.submit("pipeline: noisy\ntasks:\n  t:\n    run: echo $$ >> %s; i=0; "
                      "while [ $LOOM_ATTEMPT = 1 ] || [ $i -lt 100 ]; do i=$((i+1)); echo $i; "
                      "done\n" % pids)
        self.c.start_agent("a1", 1)
        self.c.wait_agents(["a1"])
        run_id = self.c.start_run("noisy")
        wait_for(lambda: read_text(pids).strip(), "the task to start")
        self.stray.append(int(read_text(pids).split()[0]))
        self.c.start_agent("a2", 1)
        self.c.wait_agents(["a2"])
        # Kill once some output is stored, a random amount further on.
        threshold = self.rng.randrange(1000, 50000)
        wait_for(lambda: len(self.c.log(run_id, "t", attempt=1)) >= threshold,
                 "%d bytes of output" % threshold)
        seen = self.c.log(run_id, "t", attempt=1)  # stored, hence acknowledged
        victim = self.c.agents.pop("a1")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=DEADLINE)

        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        att = self.attempts(run_id, "t")
        self.assertEqual([(a["agent"], a["state"]) for a in att],
                         [("a1", "lost"), ("a2", "succeeded")])
        self.assertEqual(self.c.log(run_id, "t"),
                         "".join("%d\n" % i for i in range(1, 101)).encode())

        lost = self.c.log(run_id, "t", attempt=1).decode()
        body, sep, marker = lost.rpartition("\n[loom] attempt lost (")
        self.assertTrue(sep, "the lost attempt's log has no loss marker: ...%r" % lost[-200:])
        self.assertRegex(marker, r"^.*\): output after byte (\d+) that the agent had not yet "
                                 r"sent is missing\n$")
        missing_from = int(marker.split("output after byte ")[1].split()[0])
        self.assertEqual(missing_from, len(body.encode()))
        # Every byte seen before the kill is kept, in order, once: the body
        # is a prefix of "1\n2\n3\n..." at least as long as what was seen.
        self.assertGreaterEqual(len(body), len(seen))
        self.assertTrue(body.startswith(seen.decode()))
        n = body.count("\n") + 2
        self.assertEqual("".join("%d\n" % i for i in range(1, n))[:len(body)], body)


class AgentRestarts(ChaosTest):
    CLUSTER = dict(heartbeat="100ms", agent_timeout="3s")

    def test_agent_restarted_under_the_same_name_gets_its_task_again(self):
        """An agent killed and restarted before its timeout says hello holding
        nothing: its attempt is lost once and the task runs again there."""
        pids = os.path.join(self.c.tmp, "pids")
        self.c.submit("pipeline: again\ntasks:\n  t:\n    run: echo $$ >> %s; "
                      "if [ $LOOM_ATTEMPT = 1 ]; then exec sleep 60; fi; echo ran\n" % pids)
        self.c.start_agent("a1", 1)
        self.c.wait_agents(["a1"])
        run_id = self.c.start_run("again")
        wait_for(lambda: read_text(pids).strip(), "the task to start")
        self.stray.append(int(read_text(pids).split()[0]))
        self.c.stop_agent("a1", signal.SIGKILL)
        self.c.start_agent("a1", 1)
        run = self.c.wait_run(run_id)
        att = self.attempts(run_id, "t")
        self.assertEqual(run["state"], "succeeded", [(a["state"], a["error"]) for a in att])
        self.assertEqual([(a["state"], a["error"]) for a in att],
                         [("lost", "agent restarted"), ("succeeded", None)])


class SchedulerDown(ChaosTest):
    """loomd away for longer than the agent timeout while a task runs."""
    CLUSTER = dict(heartbeat="100ms", agent_timeout="1s")
    DOWN_S = 60.0 if SOAK else 3.0

    def down_while_running(self, sig):
        pids = os.path.join(self.c.tmp, "pids")
        ticks = os.path.join(self.c.tmp, "ticks")
        go = os.path.join(self.c.tmp, "go")
        self.c.submit("pipeline: long\ntasks:\n  t:\n    run: echo $$ >> %s; echo started; "
                      "while [ ! -e %s ]; do echo tick >> %s; sleep 0.05; done; echo done\n"
                      "  u:\n    needs: [t]\n    run: echo downstream\n" % (pids, go, ticks))
        self.c.start_agent("a1", 1)
        self.c.start_agent("a2", 1)
        self.c.wait_agents(["a1", "a2"])
        run_id = self.c.start_run("long")
        wait_for(lambda: self.c.log(run_id, "t") == b"started\n", "the task's first output")
        before = self.attempts(run_id, "t")
        self.assertEqual([a["state"] for a in before], ["running"])
        pid = int(read_text(pids).split()[0])

        self.assertEqual(self.c.stop_loomd(sig), -sig if sig == signal.SIGKILL else 0)
        down = time.monotonic()
        n_ticks = len(read_text(ticks))
        time.sleep(self.DOWN_S)  # the outage itself, longer than the agent timeout
        self.assertTrue(alive(pid), "the agent stopped the task while loomd was down")
        self.assertGreater(len(read_text(ticks)), n_ticks, "the task stalled while loomd was down")
        self.c.start_loomd()
        self.c.wait_agents(["a1", "a2"])
        # Reconciled, not restarted: the same attempt is still running (and,
        # below, is the one that succeeds, with one process ever started).
        wait_for(lambda: self.c.get("/api/v1/runs/%d" % run_id)["tasks"][0]["state"] == "running",
                 "the attempt to be running again")
        self.assertEqual([(a["id"], a["state"]) for a in self.attempts(run_id, "t")],
                         [(before[0]["id"], "running")])
        open(go, "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual([(a["id"], a["state"]) for a in self.attempts(run_id, "t")],
                         [(before[0]["id"], "succeeded")])
        self.assertEqual(read_text(pids).split(), [str(pid)], "the task was started again")
        self.assertEqual(self.c.log(run_id, "t"), b"started\ndone\n")
        self.assertEqual(self.c.log(run_id, "u"), b"downstream\n")
        print("loomd down %.1fs" % (time.monotonic() - down))

    def test_loomd_sigkilled_for_longer_than_the_agent_timeout_restarts_nothing(self):
        self.down_while_running(signal.SIGKILL)

    def test_loomd_stopped_for_longer_than_the_agent_timeout_restarts_nothing(self):
        self.down_while_running(signal.SIGTERM)


# A second loomd on the same state folder is covered by
# test_spine.Restarts.test_second_loomd_on_the_same_state_refuses_to_start.

if __name__ == "__main__":
    unittest.main()
