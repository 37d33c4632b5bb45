"""The fleet under failure: agents killed, frozen and resumed, GPUs pinned
by index, agents cordoned. Real loomd, real agents, real processes."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import Cluster, DEADLINE, wait_for  # noqa: E402


class FleetTest(unittest.TestCase):
    def setUp(self):
        # A short agent timeout keeps the failure tests quick; every wait is
        # still for a condition.
        self.c = Cluster(agent_timeout="1s", heartbeat="100ms")
        self.c.start_loomd()

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is not None and any(t is self for t, _ in result.errors + result.failures):
            print(self.c.logs())
        self.c.close()

    def attempts(self, run_id, task):
        return self.c.get("/api/v1/runs/%d/tasks/%s/attempts" % (run_id, task))["attempts"]

    def gated_pipeline(self, name):
        """One task that records its pid, then waits for a file to exist."""
        self.go = os.path.join(self.c.tmp, name + ".go")
        self.pids = os.path.join(self.c.tmp, name + ".pids")
        self.c.submit("pipeline: %s\ntasks:\n  t:\n    run: echo $$ >> %s; "
                      "while [ ! -e %s ]; do sleep 0.02; done; echo done on $LOOM_ATTEMPT\n"
                      % (name, self.pids, self.go))
        return self.c.start_run(name)

    def running_on(self, run_id):
        run = self.c.get("/api/v1/runs/%d" % run_id)
        t = run["tasks"][0]
        return t["agent"] if t["state"] == "running" else None

    def test_agent_killed_mid_task_is_retried_elsewhere(self):
        self.c.start_agent("a1", 1)
        run_id = self.gated_pipeline("killed")
        first = wait_for(lambda: self.running_on(run_id), "the task to start")
        wait_for(lambda: os.path.exists(self.pids), "the task's process")
        self.c.start_agent("a2", 1)
        self.c.wait_agents(["a2"])
        victim = self.c.agents[first]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=DEADLINE)
        self.c.agents.pop(first)
        wait_for(lambda: len(self.attempts(run_id, "t")) == 2, "a second attempt")
        open(self.go, "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        att = self.attempts(run_id, "t")
        self.assertEqual([(a["agent"], a["state"]) for a in att],
                         [("a1", "lost"), ("a2", "succeeded")])
        self.assertIn("lost", att[0]["error"])
        self.assertEqual(self.c.log(run_id, "t"), b"done on 2\n")
        # The lost attempt's log says, in its own line, that output may be missing.
        lost = self.c.log(run_id, "t", attempt=1).decode()
        self.assertRegex(lost, r"^\n\[loom\] attempt lost \(.*\): output after byte 0 that "
                               r"the agent had not yet sent is missing\n$")

    def test_frozen_agent_is_fenced_when_it_comes_back(self):
        self.c.start_agent("a1", 1)
        run_id = self.gated_pipeline("frozen")
        wait_for(lambda: self.running_on(run_id) == "a1", "the task to start on a1")
        frozen = self.c.agents["a1"]
        frozen.send_signal(signal.SIGSTOP)
        try:
            self.c.start_agent("a2", 1)
            wait_for(lambda: [a["state"] for a in self.attempts(run_id, "t")] == ["lost", "running"]
                     or [a["state"] for a in self.attempts(run_id, "t")] == ["lost", "dispatched"],
                     "a1 to be declared lost and the task retried")
        finally:
            frozen.send_signal(signal.SIGCONT)
        # Both attempts' processes now finish; a1's late result must be refused.
        open(self.go, "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        self.c.wait_agents(["a1", "a2"])  # a1 says hello again after it thaws

        # a1 comes back holding its old attempt (or its result): loomd tells it
        # to drop the attempt at its hello, or refuses the result outright.
        def a1_fenced():
            with open(os.path.join(self.c.tmp, "loomd.log")) as f:
                text = f.read()
            return ("agent connected agent=a1" in text and "cancel=1" in text) or \
                "refused result agent=a1" in text
        wait_for(a1_fenced, "a1's old attempt to be fenced")
        att = self.attempts(run_id, "t")
        self.assertEqual([(a["agent"], a["state"]) for a in att],
                         [("a1", "lost"), ("a2", "succeeded")])
        self.assertEqual(self.c.log(run_id, "t"), b"done on 2\n")

    def test_a_blip_shorter_than_the_timeout_restarts_nothing(self):
        self.c.agent_timeout = "1s"
        self.c.start_agent("a1", 1)
        run_id = self.gated_pipeline("blip")
        wait_for(lambda: self.running_on(run_id) == "a1", "the task to start on a1")
        agent = self.c.agents["a1"]
        agent.send_signal(signal.SIGSTOP)
        time.sleep(0.3)  # the blip itself: a third of the timeout
        agent.send_signal(signal.SIGCONT)
        open(self.go, "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual((run["state"], run["tasks"][0]["attempts"]), ("succeeded", 1))

    def test_gpus_are_pinned_and_never_shared(self):
        gpus = ["--gpu", "0:NVIDIA A100-SXM4-40GB:40G", "--gpu", "1:NVIDIA A100-SXM4-40GB:40G"]
        self.c.start_agent("g1", 4, extra=gpus)
        self.c.wait_agents(["g1"])
        agent = [a for a in self.c.get("/api/v1/agents")["agents"] if a["name"] == "g1"][0]
        self.assertEqual([g["index"] for g in agent["gpus"]], [0, 1])
        trace = os.path.join(self.c.tmp, "gpus.trace")
        self.c.submit("pipeline: gpus\nparams:\n  xs: [1, 2, 3, 4, 5, 6]\ntasks:\n"
                      "  train:\n    foreach: params.xs\n    resources: {gpus: 1, gpu_model: a100}\n"
                      "    run: echo \"start $CUDA_VISIBLE_DEVICES $(date +%s%N)\" >> " + trace +
                      "; sleep 0.1; echo \"end $CUDA_VISIBLE_DEVICES $(date +%s%N)\" >> " + trace +
                      "\n  cpu:\n    run: echo \"cpu [$CUDA_VISIBLE_DEVICES]\"\n")
        run = self.c.wait_run(self.c.start_run("gpus"))
        self.assertEqual(run["state"], "succeeded")
        for t in run["tasks"]:
            if not t["name"].startswith("train"):
                continue
            att = self.attempts(run["id"], t["name"].replace("[", "%5B").replace("]", "%5D"))
            self.assertEqual(len(att[-1]["gpus"]), 1)
        self.assertEqual(self.c.log(run["id"], "cpu"), b"cpu []\n")
        busy = {}
        with open(trace) as f:
            events = sorted((int(ns), kind, dev) for kind, dev, ns in
                            (line.split() for line in f))
        for _, kind, dev in events:
            self.assertIn(dev, ("0", "1"))
            if kind == "start":
                self.assertFalse(busy.get(dev), "GPU %s given to two tasks at once" % dev)
                busy[dev] = True
            else:
                busy[dev] = False

    def test_cordoned_agent_takes_no_new_work(self):
        self.c.start_agent("a1", 2)
        self.c.start_agent("a2", 2)
        self.c.wait_agents(["a1", "a2"])
        out = self.c.cli("agents", "cordon", "a1", check=0).stdout
        self.assertIn("takes no new work", out)
        self.c.submit("pipeline: c\nparams:\n  xs: [1, 2, 3, 4]\n"
                      "tasks:\n  t:\n    foreach: params.xs\n    run: echo hi\n")
        run = self.c.wait_run(self.c.start_run("c"))
        self.assertEqual({t["agent"] for t in run["tasks"]}, {"a2"})
        listing = self.c.cli("agents", check=0).stdout
        self.assertRegex(listing, r"a1\s+connected,cordoned")
        self.c.cli("agents", "uncordon", "a1", check=0)
        self.assertEqual(self.c.cli("agents", "cordon", "nobody").returncode, 1)


if __name__ == "__main__":
    unittest.main()
