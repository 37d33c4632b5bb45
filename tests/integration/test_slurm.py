"""The Slurm executor end to end: a real one-node Slurm (munged, slurmctld,
slurmd from Debian's slurm-wlm, started by tests/slurm/slurmcluster.py as
root on loopback), a loom-agent with --executor slurm, and a local agent.
A DAG with a fan-out, a failing task and a timeout runs through Slurm; its
output is followed live; an artifact made by a Slurm job is used by a task on
the local agent; cancel reaches scancel; `loom status` shows the job ids.

If the cluster cannot start, every test fails with the exact reason (the
daemons' last log lines): it never silently skips."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "slurm"))
from loomtest import AGENT, Cluster, wait_for  # noqa: E402
from slurmcluster import SlurmCluster, SlurmError  # noqa: E402

HPC = """pipeline: hpc
tasks:
  prep:
    resources: {labels: {site: hpc}}
    run: |
      echo preparing on $(hostname) job=$SLURM_JOB_ID
      mkdir -p out && echo shard-data > out/data.txt
    outputs: [out]
  shard:
    needs: prep
    foreach: [1, 2, 3]
    resources: {labels: {site: hpc}}
    inputs: ["prep:out/data.txt"]
    run: echo shard ${{ item }} read $(cat out/data.txt) && echo ${{ item }} > part.txt
    outputs: [part.txt]
  gather:
    needs: shard
    resources: {labels: {site: local}}
    inputs: ["prep:out/data.txt"]
    run: echo gathered $(cat out/data.txt) on ${LOOM_AGENT_NAME:-local}; test -z "$SLURM_JOB_ID"
  bad:
    resources: {labels: {site: hpc}}
    run: echo about to fail >&2; exit 3
  slow:
    resources: {labels: {site: hpc}}
    timeout: 2s
    run: echo sleeping; sleep 120
"""

LIVE = """pipeline: live
tasks:
  talk:
    resources: {labels: {site: hpc}}
    run: |
      echo first-line
      while [ ! -e %s ]; do sleep 0.1; done
      echo second-line
"""

HANG = """pipeline: hang
tasks:
  wait:
    resources: {labels: {site: hpc}}
    run: echo waiting; sleep 300
"""


class SlurmExecutor(unittest.TestCase):
    slurm = None
    slurm_error = None

    @classmethod
    def setUpClass(cls):
        cls.slurm_dir = tempfile.mkdtemp(prefix="loom-slurm-")
        cls.slurm = SlurmCluster(cls.slurm_dir)
        try:
            cls.slurm.start()
        except SlurmError as e:
            cls.slurm_error = str(e)

    @classmethod
    def tearDownClass(cls):
        if cls.slurm:
            cls.slurm.stop()

    def setUp(self):
        if self.slurm_error:
            self.fail(self.slurm_error)
        self.c = Cluster()
        self.c.start_loomd()
        self.c.start_agent("hpc", 4, env=self.slurm.env,
                           extra=["--executor", "slurm", "--slurm-poll", "200ms",
                                  "--slurm-partition", "loom", "--label", "site=hpc"])
        self.c.start_agent("local", 2, extra=["--label", "site=local"])
        self.c.wait_agents(["hpc", "local"])

    def tearDown(self):
        failed = any(t is self for t, _ in self._outcome.result.errors
                     + self._outcome.result.failures) if hasattr(self, "_outcome") else False
        if failed:
            print(self.c.logs())
            for name in ("slurmctld.log", "slurmd.log"):
                path = os.path.join(self.slurm_dir, name)
                if os.path.exists(path):
                    with open(path, errors="replace") as f:
                        print("==> %s <==\n%s" % (name, f.read()[-3000:]))
        self.c.close()

    def squeue(self, *args):
        return subprocess.run(["squeue", "--noheader", "--states=all"] + list(args),
                              capture_output=True, text=True, env=self.slurm.env,
                              timeout=30).stdout

    def test_dag_with_fan_out_failure_and_timeout_runs_through_slurm(self):
        self.c.submit(HPC)
        run_id = self.c.start_run("hpc")
        run = self.c.wait_run(run_id)
        tasks = {t["name"]: t for t in run["tasks"]}
        self.assertEqual(run["state"], "failed", run)
        for name in ("prep", "shard[0]", "shard[1]", "shard[2]"):
            self.assertEqual(tasks[name]["state"], "succeeded", tasks[name])
            self.assertEqual(tasks[name]["agent"], "hpc")
            self.assertRegex(tasks[name]["job_id"] or "", r"^slurm:\d+$")
        # The local agent used what a Slurm job made.
        self.assertEqual(tasks["gather"]["state"], "succeeded", tasks["gather"])
        self.assertEqual(tasks["gather"]["agent"], "local")
        self.assertIn(b"gathered shard-data", self.c.log(run_id, "gather"))
        self.assertIn(b"shard 2 read shard-data", self.c.log(run_id, "shard[1]"))
        self.assertRegex(self.c.log(run_id, "prep").decode(), r"preparing on .* job=\d+")
        # The failing task: its exit code and its stderr, from Slurm.
        self.assertEqual(tasks["bad"]["state"], "failed")
        self.assertEqual(tasks["bad"]["exit_code"], 3)
        self.assertIn(b"about to fail", self.c.log(run_id, "bad"))
        # The timeout: enforced to the second, not to Slurm's minute.
        slow = tasks["slow"]
        self.assertEqual(slow["state"], "failed")
        self.assertRegex(slow["error"], r"^timed out after 2(\.0+)?s$")
        self.assertLess(slow["ended_unix_ms"] - slow["started_unix_ms"], 15000)
        job = tasks["slow"]["job_id"].split(":")[1]
        self.assertIn("CANCELLED", self.squeue("--jobs=" + job, "-o", "%T"))
        # loom status shows the jobs.
        out = self.c.cli("status", str(run_id), check=0).stdout
        self.assertIn("hpc (slurm:", out)
        attempts = self.c.get("/api/v1/runs/%d/tasks/prep/attempts" % run_id)["attempts"]
        self.assertRegex(attempts[-1]["job_id"], r"^slurm:\d+$")

    def test_output_is_followed_live(self):
        release = os.path.join(self.c.tmp, "release")
        self.c.submit(LIVE % release)
        run_id = self.c.start_run("live")
        follow = subprocess.Popen([os.path.join(os.path.dirname(self.c.loomd.args[0]), "loom"),
                                   "logs", "-f", str(run_id), "talk"],
                                  stdout=subprocess.PIPE, env=self.c.cli_env())
        try:
            # The first line arrives while the job is still running (it waits
            # for the release file, which only the test creates).
            line = follow.stdout.readline()
            self.assertEqual(line, b"first-line\n")
            self.assertEqual(self.c.get("/api/v1/runs/%d" % run_id)["state"], "running")
            open(release, "w").close()
            self.assertEqual(follow.stdout.readline(), b"second-line\n")
            self.assertEqual(follow.wait(timeout=60), 0)
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
            follow.stdout.close()
        self.assertEqual(self.c.wait_run(run_id)["state"], "succeeded")

    def test_cancel_reaches_scancel(self):
        self.c.submit(HANG)
        run_id = self.c.start_run("hang")

        def job_running():
            t = self.c.get("/api/v1/runs/%d" % run_id)["tasks"][0]
            return t["state"] == "running" and t.get("job_id") and t
        task = wait_for(job_running, "the job to run", timeout=60, step=0.1)
        job = task["job_id"].split(":")[1]
        self.assertIn("RUNNING", self.squeue("--jobs=" + job, "-o", "%T"))
        self.c.post("/api/v1/runs/%d/cancel" % run_id)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "cancelled")
        wait_for(lambda: "CANCELLED" in self.squeue("--jobs=" + job, "-o", "%T"),
                 "Slurm to report job %s cancelled" % job, timeout=30, step=0.1)

    def test_capacity_comes_from_sinfo(self):
        agents = {a["name"]: a for a in self.c.get("/api/v1/agents")["agents"]}
        hpc = agents["hpc"]
        self.assertEqual(hpc["cpus"], self.slurm.cpus, hpc)
        self.assertEqual(hpc["memory_bytes"], self.slurm.memory_mb << 20, hpc)

    def test_node_failure_is_a_lost_attempt_and_retried(self):
        mark = os.path.join(self.c.tmp, "ran-once")
        self.c.submit(HANG.replace("pipeline: hang", "pipeline: lost")
                      .replace("sleep 300", "test -e %s || { touch %s; sleep 300; }"
                               % (mark, mark)))
        run_id = self.c.start_run("lost")

        def job_running():
            t = self.c.get("/api/v1/runs/%d" % run_id)["tasks"][0]
            return t["state"] == "running" and t.get("job_id") and t
        task = wait_for(job_running, "the job to run", timeout=60, step=0.1)
        scontrol = ["scontrol", "update", "NodeName=localhost"]
        subprocess.run(scontrol + ["State=DOWN", "Reason=loomtest"], check=True,
                       env=self.slurm.env, timeout=30)
        try:
            wait_for(lambda: "NODE_FAIL" in self.squeue("--jobs=" + task["job_id"][6:], "-o",
                                                        "%T"),
                     "Slurm to fail the job with its node", timeout=30, step=0.1)
        finally:
            # ReturnToService=2 may have brought the node back already.
            subprocess.run(scontrol + ["State=RESUME"], env=self.slurm.env, timeout=30,
                           capture_output=True)
            wait_for(self.slurm._node_idle, "the node to be back", timeout=60, step=0.1)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded", run)
        attempts = self.c.get("/api/v1/runs/%d/tasks/wait/attempts" % run_id)["attempts"]
        self.assertEqual([a["state"] for a in attempts], ["lost", "succeeded"], attempts)
        self.assertIn("NODE_FAIL", attempts[0]["error"])

    def test_preemption_is_a_lost_attempt_and_retried(self):
        mark = os.path.join(self.c.tmp, "ran-once")
        self.c.submit(HANG.replace("pipeline: hang", "pipeline: preempted")
                      .replace("sleep 300", "test -e %s || { touch %s; sleep 300; }"
                               % (mark, mark)))
        run_id = self.c.start_run("preempted")

        def job_running():
            t = self.c.get("/api/v1/runs/%d" % run_id)["tasks"][0]
            return t["state"] == "running" and t.get("job_id") and t
        task = wait_for(job_running, "the job to run", timeout=60, step=0.1)
        job = task["job_id"].split(":")[1]
        wait_for(lambda: "RUNNING" in self.squeue("--jobs=" + job, "-o", "%T"),
                 "Slurm to run job %s" % job, timeout=30, step=0.1)
        # A job of the higher-tier partition that needs the whole node: Slurm
        # cancels the loom job to make room (PreemptMode=CANCEL).
        subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--exclusive",
                        "--job-name=urgent", "--output=/dev/null", "--chdir=" + self.c.tmp,
                        "--wrap=sleep 1"], check=True, env=self.slurm.env, timeout=30,
                       capture_output=True)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded", run)
        attempts = self.c.get("/api/v1/runs/%d/tasks/wait/attempts" % run_id)["attempts"]
        self.assertEqual([a["state"] for a in attempts], ["lost", "succeeded"], attempts)
        self.assertIn("PREEMPTED", attempts[0]["error"])

    def test_a_restarted_agent_cancels_the_jobs_its_killed_run_left(self):
        mark = os.path.join(self.c.tmp, "ran-once")
        self.c.submit(HANG.replace("pipeline: hang", "pipeline: orphan")
                      .replace("sleep 300", "test -e %s || { touch %s; sleep 300; }"
                               % (mark, mark)))
        run_id = self.c.start_run("orphan")

        def job_running():
            t = self.c.get("/api/v1/runs/%d" % run_id)["tasks"][0]
            return t["state"] == "running" and t.get("job_id") and t
        job = wait_for(job_running, "the job to run", timeout=60, step=0.1)["job_id"][6:]
        self.c.stop_agent("hpc", signal.SIGKILL)
        self.assertIn("RUNNING", self.squeue("--jobs=" + job, "-o", "%T"))
        self.c.start_agent("hpc", 4, env=self.slurm.env,
                           extra=["--executor", "slurm", "--slurm-poll", "200ms",
                                  "--slurm-partition", "loom", "--label", "site=hpc"])
        # Left running, the old job would run the task a second time beside
        # its retry.
        wait_for(lambda: "CANCELLED" in self.squeue("--jobs=" + job, "-o", "%T"),
                 "the restarted agent to cancel job %s" % job, timeout=30, step=0.1)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded", run)
        attempts = self.c.get("/api/v1/runs/%d/tasks/wait/attempts" % run_id)["attempts"]
        self.assertEqual([a["state"] for a in attempts], ["lost", "succeeded"], attempts)


class SlurmMisconfigured(unittest.TestCase):
    """What a user sees when the Slurm executor cannot work: no cluster
    needed."""

    def test_bad_flags_are_refused_with_what_is_wrong(self):
        for args, why in ((["--executor", "pbs"], "--executor pbs: expected local or slurm"),
                          (["--slurm-option", "constraint=ib"],
                           "--slurm-option constraint=ib: expected a long sbatch option"),
                          (["--slurm-poll", "10ms"],
                           "--slurm-poll 10ms: expected a duration of at least 100ms"),
                          (["--slurm-partition", "a b"], "--slurm-partition a b: expected a name")):
            p = subprocess.run([AGENT] + args, capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(why, p.stderr)

    def test_without_sbatch_the_task_fails_saying_so(self):
        c = Cluster()
        try:
            c.start_loomd()
            env = dict(os.environ, PATH="/nonexistent")
            c.start_agent("hpc", 2, env=env, extra=["--executor", "slurm", "--label", "site=hpc"])
            c.wait_agents(["hpc"])
            c.submit(HANG)
            run = c.wait_run(c.start_run("hang"))
            task = run["tasks"][0]
            self.assertEqual(task["state"], "failed", task)
            self.assertIn("could not start: sbatch failed: cannot run sbatch", task["error"])
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
