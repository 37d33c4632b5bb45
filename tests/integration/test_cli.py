"""The loom CLI against a real loomd and agent: what a user types and the
exit statuses a CI job relies on."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import CLI, DEADLINE, ClusterTest, wait_for  # noqa: E402

GOOD = "pipeline: good\ntasks:\n  hi:\n    run: echo hello cli\n  bye:\n    needs: [hi]\n    run: [echo, bye]\n"
BAD = "pipeline: bad\ntasks:\n  boom:\n    run: echo failing; exit 4\n"


class Cli(ClusterTest):
    AGENTS = {"cli-agent": 2}

    def write(self, name, text):
        # A folder of its own: `loom submit` bundles the folder beside the
        # file, and c.tmp also holds loomd's state and the agents' folders.
        folder = os.path.join(self.c.tmp, "pipelines")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_logs_with_timestamps(self):
        import re
        path = self.write("stamped.yaml", "pipeline: stamped\ntasks:\n  t:\n"
                          "    run: printf 'one\\ntwo\\n\\nthree'\n")
        self.c.cli("submit", path, check=0)
        self.c.cli("run", "stamped", "--wait", check=0)
        run_id = self.c.get("/api/v1/runs?pipeline=stamped")["runs"][0]["id"]
        out = self.c.cli("logs", str(run_id), "t", "--timestamps", check=0).stdout
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
        lines = out.split("\n")
        self.assertEqual(len(lines), 4, out)
        for line in lines:
            self.assertRegex(line, "^" + stamp)
        # Without the stamps, the same bytes as the plain log.
        self.assertEqual(re.sub("(^|\n)" + stamp, r"\1", out), "one\ntwo\n\nthree")
        self.assertEqual(self.c.log(run_id, "t"), b"one\ntwo\n\nthree")
        # From an offset: stamps start where the reading starts.
        part = self.c.log(run_id, "t", offset=4, timestamps=1).decode()
        self.assertEqual(re.sub("(^|\n)" + stamp, r"\1", part), "two\n\nthree")

    def test_submit_run_wait_status_logs(self):
        path = self.write("good.yaml", GOOD)
        out = self.c.cli("submit", path, check=0).stdout
        self.assertIn("submitted good version 1 (2 tasks", out)
        self.assertIn("unchanged", self.c.cli("submit", path, check=0).stdout)
        run = self.c.cli("run", "good", "--wait", check=0).stdout
        self.assertIn("succeeded", run)
        run_id = self.c.get("/api/v1/runs?pipeline=good")["runs"][0]["id"]
        status = self.c.cli("status", str(run_id), check=0).stdout
        self.assertRegex(status, r"hi\s+succeeded\s+1\s+cli-agent\s+0")
        self.assertEqual(self.c.cli("logs", str(run_id), "hi", check=0).stdout, "hello cli\n")
        listing = self.c.cli("status", check=0).stdout
        self.assertIn("good", listing)
        data = json.loads(self.c.cli("--json", "status", str(run_id), check=0).stdout)
        self.assertEqual(data["state"], "succeeded")
        self.assertIn("cli-agent", self.c.cli("agents", check=0).stdout)
        self.assertIn("good", self.c.cli("pipelines", check=0).stdout)

    def test_failed_run_exits_nonzero_and_shows_the_output(self):
        self.c.cli("submit", self.write("bad.yaml", BAD), check=0)
        p = self.c.cli("run", "bad", "--logs", check=1)
        self.assertIn("failing", p.stdout)
        self.assertIn("failed", p.stdout)

    def test_invalid_dag_is_reported_with_position(self):
        path = self.write("broken.yaml", "pipeline: x\ntasks:\n  a:\n    run: echo\n    needs: [ghost]\n")
        p = self.c.cli("submit", path, check=1)
        self.assertIn("broken.yaml:5:13: error:", p.stderr)
        self.assertIn('unknown task "ghost"', p.stderr)
        v = self.c.cli("validate", path, check=1)
        self.assertIn("broken.yaml:5:13: error:", v.stderr)

    def test_graph_draws_the_dag(self):
        path = self.write("diamond.yaml", "pipeline: d\ntasks:\n  a:\n    run: x\n"
                          "  b:\n    needs: a\n    run: x\n  c:\n    needs: a\n    run: x\n"
                          "  z:\n    needs: [b, c]\n    run: x\n")
        dot = self.c.cli("graph", path, "--dot", check=0).stdout
        self.assertTrue(dot.startswith('digraph "d" {'), dot)
        for edge in ('"a" -> "b"', '"a" -> "c"', '"b" -> "z"', '"c" -> "z"'):
            self.assertIn(edge, dot)
        self.assertNotIn('"a" -> "z"', dot)
        bad = self.write("cycle.yaml", "pipeline: c\ntasks:\n  a:\n    needs: b\n    run: x\n"
                         "  b:\n    needs: a\n    run: x\n")
        p = self.c.cli("graph", bad, check=1)
        self.assertIn("cycle", p.stderr)

    def test_usage_and_unreachable_server(self):
        self.assertEqual(self.c.cli("frobnicate").returncode, 2)
        self.assertEqual(self.c.cli("run").returncode, 2)
        self.assertEqual(self.c.cli("run", "nope").returncode, 1)  # 404 from loomd
        env = dict(os.environ, LOOM_SERVER="http://127.0.0.1:1")
        p = subprocess.run([CLI, "agents"], capture_output=True, text=True, env=env,
                           timeout=DEADLINE)
        self.assertEqual(p.returncode, 3)
        self.assertIn("127.0.0.1:1", p.stderr)

    def test_follow_prints_live_output(self):
        go = os.path.join(self.c.tmp, "go")
        self.c.cli("submit", self.write("live.yaml", (
            "pipeline: live\ntasks:\n  t:\n    run: echo one; while [ ! -e %s ]; "
            "do sleep 0.02; done; echo two\n") % go), check=0)
        out = self.c.cli("run", "live", check=0).stdout
        run_id = out.split()[1]
        env = self.c.cli_env()
        p = subprocess.Popen([CLI, "logs", run_id, "t", "-f"], stdout=subprocess.PIPE, env=env)
        try:
            self.assertEqual(p.stdout.readline(), b"one\n")
            open(go, "w").close()
            self.assertEqual(p.stdout.read(), b"two\n")
            self.assertEqual(p.wait(timeout=DEADLINE), 0)
        finally:
            if p.poll() is None:
                p.kill()
            p.stdout.close()


class Up(unittest.TestCase):
    def test_loom_up_runs_a_pipeline_on_one_machine(self):
        home = tempfile.mkdtemp(prefix="loomup-")
        env = dict(os.environ, LOOM_HOME=home)
        env.pop("LOOM_SERVER", None)
        up = subprocess.Popen([CLI, "up", "--home", home, "--http", "127.0.0.1:0",
                               "--bind", "tcp://127.0.0.1:*"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def agent_up():
                p = subprocess.run([CLI, "agents"], capture_output=True, text=True, env=env)
                return p.returncode == 0 and "connected" in p.stdout
            wait_for(agent_up, "loom up's agent")
            os.makedirs(os.path.join(home, "p"))
            path = os.path.join(home, "p", "good.yaml")
            with open(path, "w") as f:
                f.write(GOOD)
            for args in (["submit", path], ["run", "good", "--wait"]):
                p = subprocess.run([CLI] + args, capture_output=True, text=True, env=env,
                                   timeout=DEADLINE)
                self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            up.send_signal(signal.SIGINT)
            rc = up.wait(timeout=DEADLINE)
            shutil.rmtree(home, ignore_errors=True)
        self.assertEqual(rc, 0)


if __name__ == "__main__":
    unittest.main()
