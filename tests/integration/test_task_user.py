"""How the agent runs tasks: as the --run-as user (when the agent is root),
with an environment built from an allowlist, --pass-env and the DAG, not the
agent's own environment inherited wholesale."""
import os
import pwd
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import AGENT, DEADLINE, Cluster  # noqa: E402

DAG = """pipeline: who
env:
  FROM_DAG: dagval
tasks:
  probe:
    run: |
      echo "uid=$(id -u) user=$(id -un)"
      if cat "$SECRET" >/dev/null 2>&1; then echo secret=readable; else echo secret=denied; fi
      echo "hidden=${AGENT_ONLY_VAR:-unset} passed=${PASSED_VAR:-unset} glob=${PFX_A:-unset}"
      echo "dag=$FROM_DAG home=$HOME user=$USER logname=$LOGNAME"
      echo "lang=${LANG:-unset} path_set=${PATH:+yes}"
      echo made > out.txt && echo "owner=$(stat -c %U .) wrote=$(cat out.txt)"
    outputs: [out.txt]
"""


class TaskUser(unittest.TestCase):
    def setUp(self):
        self.c = Cluster()
        self.c.start_loomd()

    def tearDown(self):
        if any(t is self for t, _ in self._outcome.result.errors + self._outcome.result.failures):
            print(self.c.logs())
        self.c.close()

    def agent_env(self):
        env = dict(os.environ)
        env.update({"AGENT_ONLY_VAR": "leaked", "PASSED_VAR": "yes", "PFX_A": "1",
                    "LANG": "C.UTF-8"})
        return env

    def run_probe(self, run_as):
        secret = os.path.join(self.c.tmp, "secret.txt")
        with open(secret, "w") as f:
            f.write("root only\n")
        os.chmod(secret, 0o600)
        src = DAG.replace("  FROM_DAG: dagval\n", "  FROM_DAG: dagval\n  SECRET: %s\n" % secret)
        self.c.start_agent("u1", extra=["--run-as", run_as, "--pass-env", "PASSED_VAR",
                                        "--pass-env", "PFX_*"], env=self.agent_env())
        self.c.wait_agents(["u1"])
        self.c.submit(src, "who.yaml")
        run = self.c.wait_run(self.c.start_run("who"))
        log = self.c.log(run["id"], "probe").decode()
        return run, log

    def test_environment_is_an_allowlist_plus_pass_env_and_the_dag(self):
        me = pwd.getpwuid(os.geteuid())
        run, log = self.run_probe(me.pw_name)
        self.assertEqual(run["state"], "succeeded", log)
        self.assertIn("hidden=unset passed=yes glob=1", log)
        self.assertIn("dag=dagval home=%s user=%s logname=%s" % (
            os.environ.get("HOME", ""), me.pw_name, me.pw_name), log)
        self.assertIn("lang=C.UTF-8 path_set=yes", log)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to run tasks as another user")
    def test_run_as_nobody(self):
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.c.tmp, 0o711)  # the agent's work folder must be reachable by nobody
        run, log = self.run_probe("nobody")
        self.assertEqual(run["state"], "succeeded", log)
        self.assertIn("uid=%d user=nobody" % nobody.pw_uid, log)
        self.assertIn("secret=denied", log)
        self.assertIn("hidden=unset passed=yes glob=1", log)
        self.assertIn("home=%s user=nobody logname=nobody" % nobody.pw_dir, log)
        self.assertIn("owner=nobody wrote=made", log)

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_root_must_choose(self):
        work = os.path.join(self.c.tmp, "w")
        p = subprocess.run([AGENT, "--server", self.c.zmq, "--work-dir", work],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--run-as USER", p.stderr)
        self.assertIn("--run-as root", p.stderr)
        p = subprocess.run([AGENT, "--server", self.c.zmq, "--work-dir", work,
                            "--run-as", "no-such-user-here"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('no user "no-such-user-here"', p.stderr)
        # A work folder nobody cannot get to: refused at start, naming it.
        os.chmod(self.c.tmp, 0o700)
        p = subprocess.run([AGENT, "--server", self.c.zmq, "--work-dir", work,
                            "--run-as", "nobody"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('user "nobody" cannot reach', p.stderr)
        self.assertIn(self.c.tmp, p.stderr)

    def test_bad_pass_env_pattern_is_refused(self):
        me = pwd.getpwuid(os.geteuid()).pw_name
        p = subprocess.run([AGENT, "--server", self.c.zmq, "--run-as", me,
                            "--work-dir", os.path.join(self.c.tmp, "w"),
                            "--pass-env", "NOT-A-NAME"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('--pass-env "NOT-A-NAME": expected a variable name', p.stderr)

    @unittest.skipIf(os.geteuid() == 0, "as root every user is allowed")
    def test_not_root_cannot_run_as_another_user(self):
        p = subprocess.run([AGENT, "--server", self.c.zmq, "--run-as", "root"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 2)
        self.assertIn("only root can run tasks as another user", p.stderr)


if __name__ == "__main__":
    unittest.main()
