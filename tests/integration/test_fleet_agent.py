"""The agent's half of the fleet, end to end: a real loomd and real agents.

GPUs come from the stand-in nvidia-smi (tests/integration/fake-nvidia-smi,
put on PATH as nvidia-smi) or from --gpu; what loomd shows of them is read
from GET /api/v1/agents. SIGTERM drains an agent: its running task finishes
and is reported, then it exits 0.
"""
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import Cluster, DEADLINE, SOURCE, wait_for  # noqa: E402

MIB = 1024 * 1024
FAKE_SMI = os.path.join(SOURCE, "tests", "integration", "fake-nvidia-smi")


class FleetCluster(Cluster):
    """Cluster with helpers for agents that see (stand-in) GPUs."""

    def agent(self, name):
        for a in self.get("/api/v1/agents")["agents"]:
            if a["name"] == name:
                return a
        return None

    def fake_smi_env(self, mode="two"):
        """The environment of an agent that finds the stand-in nvidia-smi
        (and no NVML, even on a machine that has one)."""
        bin_dir = os.path.join(self.tmp, "bin")
        if not os.path.isdir(bin_dir):
            os.mkdir(bin_dir)
            os.symlink(FAKE_SMI, os.path.join(bin_dir, "nvidia-smi"))
        env = dict(os.environ)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["FAKE_NVIDIA_SMI"] = mode
        env["LOOM_NVML_LIBRARY"] = "/nonexistent/libnvidia-ml.so.1"
        return env


class FleetTest(unittest.TestCase):
    def setUp(self):
        self.c = FleetCluster()
        self.c.start_loomd()

    def tearDown(self):
        failed = any(t is self for t, _ in
                     self._outcome.result.errors + self._outcome.result.failures)
        if failed:
            print(self.c.logs())
        self.c.close()

    def test_agent_reports_gpus_found_with_nvidia_smi(self):
        self.c.start_agent("g1", extra=["--label", "zone=test"], env=self.c.fake_smi_env())
        self.c.wait_agents(["g1"])
        a = self.c.agent("g1")
        self.assertEqual(a["gpu_source"], "nvidia-smi")
        gpus = [{k: g[k] for k in ("index", "uuid", "model", "memory_bytes")} for g in a["gpus"]]
        self.assertEqual(gpus, [
            {"index": 0, "uuid": "GPU-5c0e3b7a-1d2f-4e6a-9b8c-0a1b2c3d4e5f",
             "model": "NVIDIA A100-SXM4-40GB", "memory_bytes": 40960 * MIB},
            {"index": 1, "uuid": "GPU-9f8e7d6c-5b4a-4392-8170-fedcba987654",
             "model": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * MIB},
        ])
        self.assertGreater(a["cpus_usable"], 0)
        self.assertLessEqual(a["cpus_usable"], len(os.sched_getaffinity(0)))
        self.assertFalse(a["draining"])
        # Usage arrives with the heartbeats.
        usage = wait_for(lambda: self.c.agent("g1")["usage"], "a heartbeat's usage")
        self.assertGreater(usage["memory_available_bytes"], 0)
        self.assertGreaterEqual(usage["load1"], 0)

    def test_malformed_nvidia_smi_means_no_gpus(self):
        self.c.start_agent("g2", env=self.c.fake_smi_env("malformed"))
        self.c.wait_agents(["g2"])
        a = self.c.agent("g2")
        self.assertEqual((a["gpu_source"], a["gpus"]), ("none", []))
        with open(os.path.join(self.c.tmp, "agent-g2.log")) as f:
            self.assertIn("nvidia-smi printed output we do not understand", f.read())

    def test_configured_gpus_and_what_a_task_sees(self):
        self.c.start_agent("g3", extra=["--gpu", "0:NVIDIA L4:24G:GPU-l4-0",
                                        "--gpu", "1:NVIDIA L4:24G"],
                           env=self.c.fake_smi_env())
        self.c.wait_agents(["g3"])
        a = self.c.agent("g3")
        self.assertEqual(a["gpu_source"], "config")
        self.assertEqual([(g["index"], g["uuid"], g["model"], g["memory_bytes"])
                          for g in a["gpus"]],
                         [(0, "GPU-l4-0", "NVIDIA L4", 24 << 30), (1, "", "NVIDIA L4", 24 << 30)])
        # A task that asked for no GPU, on a GPU agent, sees none.
        self.c.submit("pipeline: nogpu\ntasks:\n  t:\n"
                      "    run: echo \"[${CUDA_VISIBLE_DEVICES-unset}]"
                      "[${NVIDIA_VISIBLE_DEVICES-unset}]\"\n")
        run = self.c.wait_run(self.c.start_run("nogpu"))
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.c.log(run["id"], "t"), b"[][]\n")

    def test_memory_limit_is_enforced(self):
        self.c.start_agent("m1", extra=["--no-gpu-detect"])
        self.c.wait_agents(["m1"])
        with open(os.path.join(self.c.tmp, "agent-m1.log")) as f:
            if "task limits: RLIMIT_AS" in f.read():
                self.skipTest("no cgroup the agent can create here (needs root and a "
                              "writable cgroup hierarchy)")
        # tail holds the whole never-ending line: ~200 MB, under 50 MB.
        self.c.submit("pipeline: mem\ntasks:\n"
                      "  big:\n    resources: {memory: 50M}\n"
                      "    run: head -c 200M /dev/zero | tail > /dev/null\n"
                      "  free:\n    run: head -c 200M /dev/zero | tail > /dev/null\n")
        run = self.c.wait_run(self.c.start_run("mem"))
        t = {x["name"]: x for x in run["tasks"]}
        self.assertEqual(t["free"]["state"], "succeeded")
        self.assertEqual(t["big"]["state"], "failed")
        attempts = self.c.get("/api/v1/runs/%d/tasks/big/attempts" % run["id"])["attempts"]
        self.assertEqual(attempts[-1]["error"], "killed: out of memory, limit 50 MiB")

    def test_sigterm_drains_the_running_task_then_exits_0(self):
        p = self.c.start_agent("d1", extra=["--no-gpu-detect"])
        self.c.wait_agents(["d1"])
        go = os.path.join(self.c.tmp, "go")
        started = os.path.join(self.c.tmp, "started")
        self.c.submit("pipeline: slow\ntasks:\n  t:\n    run: echo before; touch %s; "
                      "while [ ! -e %s ]; do sleep 0.02; done; echo after\n" % (started, go))
        run_id = self.c.start_run("slow")
        wait_for(lambda: os.path.exists(started), "the task to start")
        p.send_signal(signal.SIGTERM)
        wait_for(lambda: self.c.agent("d1")["draining"], "loomd to see the agent draining")
        self.assertIsNone(p.poll())  # still running its task
        open(go, "w").close()
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.c.log(run_id, "t"), b"before\nafter\n")
        self.assertEqual(p.wait(timeout=DEADLINE), 0)
        self.c.agents.pop("d1")


if __name__ == "__main__":
    unittest.main()
