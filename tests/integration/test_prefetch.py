"""Prefetch (loom-agent --prefetch N): an agent holds Dispatches beyond its
slots and starts each the moment a slot frees, without asking loomd."""
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ClusterTest, wait_for  # noqa: E402


def gated(tmp, names, prelude=""):
    """Tasks that mark their start, then wait for their own go file (for at
    most a minute, so that a failed test leaves no process behind)."""
    tasks = []
    for n in names:
        tasks.append(
            "  %s:\n    run: %stouch %s/started-%s; for i in $(seq 6000); do"
            " [ -e %s/go-%s ] && exit 0; sleep 0.01; done; exit 1\n"
            % (n, prelude, tmp, n, tmp, n))
    return "pipeline: gated\ntasks:\n" + "".join(tasks)


class PrefetchTest(ClusterTest):
    AGENTS = {}

    def setUp(self):
        super().setUp()
        self.c.start_agent("p1", 1, extra=["--prefetch", "1", "--kill-grace", "1s"])
        self.c.wait_agents(["p1"])

    def started(self, name):
        return os.path.exists(os.path.join(self.c.tmp, "started-" + name))

    def go(self, name):
        open(os.path.join(self.c.tmp, "go-" + name), "w").close()

    def attempts(self, run_id, task):
        return self.c.get("/api/v1/runs/%d/tasks/%s/attempts" % (run_id, task))["attempts"]

    def one_running_one_queued(self, run_id):
        """Waits until one task runs and the other is dispatched to the agent
        but not started; returns (running, queued)."""
        def state():
            a, b = self.attempts(run_id, "a"), self.attempts(run_id, "b")
            if len(a) != 1 or len(b) != 1:
                return None
            if self.started("a") and b[0]["state"] == "dispatched":
                return ("a", "b")
            if self.started("b") and a[0]["state"] == "dispatched":
                return ("b", "a")
            return None
        return wait_for(state, "one task running and the other queued on the agent")

    def test_queued_task_starts_without_loomd(self):
        self.c.submit(gated(self.c.tmp, ["a", "b"]))
        run_id = self.c.start_run("gated")
        first, second = self.one_running_one_queued(run_id)
        self.assertFalse(self.started(second))  # one slot: it waits
        agent = {a["name"]: a for a in self.c.get("/api/v1/agents")["agents"]}["p1"]
        self.assertEqual((agent["prefetch"], agent["running"], agent["queued"]), (1, 1, 1))
        row = [ln for ln in self.c.cli("agents", check=0).stdout.splitlines() if "p1" in ln]
        self.assertIn("1+1 held", row[0])
        # With loomd stopped, only the agent can start the second task.
        self.c.loomd.send_signal(signal.SIGSTOP)
        try:
            self.go(first)
            wait_for(lambda: self.started(second), "the queued task to start with loomd stopped")
        finally:
            self.c.loomd.send_signal(signal.SIGCONT)
        self.go(second)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        # One slot: never both at once.
        x, y = self.attempts(run_id, first)[0], self.attempts(run_id, second)[0]
        self.assertEqual((x["state"], y["state"]), ("succeeded", "succeeded"))
        self.assertGreaterEqual(y["started_unix_ms"], x["ended_unix_ms"])

    def test_cancel_drops_a_queued_task(self):
        # The running task outlives its SIGTERM by the agent's kill grace
        # (1 s), so its slot stays taken while the agent handles the queued
        # task's Cancel: the queued one must be dropped, not started.
        self.c.submit(gated(self.c.tmp, ["a", "b"], prelude="trap '' TERM; "))
        run_id = self.c.start_run("gated")
        first, second = self.one_running_one_queued(run_id)
        self.c.post("/api/v1/runs/%d/cancel" % run_id)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "cancelled")
        t = self.tasks(run)
        self.assertEqual((t["a"]["state"], t["b"]["state"]), ("cancelled", "cancelled"))
        queued = self.attempts(run_id, second)[0]
        self.assertEqual(queued["state"], "cancelled")
        # It never ran: the slot stayed taken until both were over.
        self.assertFalse(self.started(second))
        # The agent's slot and queue are free again: a new run uses both.
        self.go("a")
        self.go("b")
        self.assertEqual(self.c.wait_run(self.c.start_run("gated"))["state"], "succeeded")

    def test_many_short_tasks_one_slot(self):
        n = 40
        trace = os.path.join(self.c.tmp, "trace")
        src = "pipeline: wide\ntasks:\n" + "".join(
            "  t%02d:\n    run: echo start $(date +%%s%%N) >> %s; echo end $(date +%%s%%N) >> %s\n"
            % (i, trace, trace) for i in range(n))
        self.c.submit(src)
        run = self.c.wait_run(self.c.start_run("wide"))
        self.assertEqual(run["state"], "succeeded")
        with open(trace) as f:
            kinds = [line.split()[0] for line in f]
        # One slot with a prefetched queue still runs one task at a time.
        self.assertEqual(kinds, ["start", "end"] * n)


class PrefetchFleetTest(ClusterTest):
    """Prefetch beside an agent that does not prefetch."""
    AGENTS = {"plain": 1}

    def setUp(self):
        super().setUp()
        self.c.start_agent("p1", 1, extra=["--prefetch", "1"])
        self.c.wait_agents(["p1"])

    def started(self, name):
        return os.path.exists(os.path.join(self.c.tmp, "started-" + name))

    def attempts(self, run_id, task):
        return self.c.get("/api/v1/runs/%d/tasks/%s/attempts" % (run_id, task))["attempts"]

    def placed(self, run_id):
        """Waits for two tasks running (one per agent) and one queued on p1;
        returns {task: (agent, state)}."""
        def placed():
            got = {}
            for n in "abc":
                for x in self.attempts(run_id, n):
                    got[n] = (x["agent"], x["state"])
            states = sorted(st for _, st in got.values())
            return got if states == ["dispatched", "running", "running"] else None
        return wait_for(placed, "two tasks running and one queued")

    def test_a_queued_task_moves_to_a_slot_that_frees_elsewhere(self):
        self.c.submit(gated(self.c.tmp, ["a", "b", "c"]))
        run_id = self.c.start_run("gated")
        got = self.placed(run_id)
        queued = [n for n, (a, st) in got.items() if st == "dispatched"][0]
        self.assertEqual(got[queued][0], "p1")
        on_p1 = [n for n, (a, st) in got.items() if a == "p1" and st == "running"][0]
        on_plain = [n for n, (a, st) in got.items() if a == "plain"][0]
        # The plain agent's task ends while p1's still runs: the queued task
        # is asked back from p1 and runs on the free slot.
        open(os.path.join(self.c.tmp, "go-" + on_plain), "w").close()
        wait_for(lambda: self.started(queued), "the queued task to start on the free slot")
        att = self.attempts(run_id, queued)
        self.assertEqual([x["agent"] for x in att], ["p1", "plain"])
        self.assertEqual(att[0]["state"], "lost")
        self.assertIn("withdrawn before it started", att[0]["error"])
        for n in (queued, on_p1):
            open(os.path.join(self.c.tmp, "go-" + n), "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.attempts(run_id, on_p1)[0]["state"], "succeeded")

    def test_free_slots_first_and_a_lost_backlog_is_retried(self):
        self.c.submit(gated(self.c.tmp, ["a", "b", "c"]))
        run_id = self.c.start_run("gated")
        got = self.placed(run_id)
        # A free slot anywhere comes before a backlog: one runs on each
        # agent, and only the prefetching agent holds the third.
        running = sorted(a for a, st in got.values() if st == "running")
        self.assertEqual(running, ["p1", "plain"])
        queued = [n for n, (a, st) in got.items() if st == "dispatched"]
        self.assertEqual(len(queued), 1)
        self.assertEqual(got[queued[0]][0], "p1")
        # The prefetching agent dies with a task running and one queued:
        # both are lost and run again, on the agent that is left.
        self.c.stop_agent("p1", signal.SIGKILL)
        on_p1 = [n for n, (a, st) in got.items() if a == "p1"]
        for n in "abc":
            if n not in on_p1:
                open(os.path.join(self.c.tmp, "go-" + n), "w").close()
        for n in on_p1:
            wait_for(lambda: self.c.get("/api/v1/runs/%d/tasks/%s/attempts" % (run_id, n))[
                "attempts"][-1]["agent"] == "plain", "task %s to be placed again" % n)
            open(os.path.join(self.c.tmp, "go-" + n), "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        for n in on_p1:
            att = self.c.get("/api/v1/runs/%d/tasks/%s/attempts" % (run_id, n))["attempts"]
            self.assertEqual([(x["agent"], x["state"]) for x in att],
                             [("p1", "lost"), ("plain", "succeeded")])


if __name__ == "__main__":
    unittest.main()
