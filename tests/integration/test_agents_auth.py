"""Agent enrolment end to end with the real programs: loomd on CURVE, agents
that join with a token, restart with their stored keys, wait for `loom agents
approve`, and are cut off by `loom agents revoke`."""
import os
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import DEADLINE, ApiError, ClusterTest, wait_for  # noqa: E402


def read(path):
    with open(path) as f:
        return f.read()


class AgentEnrolment(ClusterTest):
    AGENTS = {"a1": 1}

    def run_of(self, source):
        name = source.split()[1]
        self.c.submit(source)
        return self.c.start_run(name)

    def agent_log(self, name):
        return read(os.path.join(self.c.tmp, "agent-%s.log" % name))

    def keys(self):
        return {k["agent"]: k for k in self.c.get("/api/v1/agents/keys")["keys"]}

    def test_join_token_then_stored_keys(self):
        work = os.path.join(self.c.tmp, "agent-a1", "curve")
        mode = stat.S_IMODE(os.stat(os.path.join(work, "agent.key")).st_mode)
        self.assertEqual(mode, 0o600)
        server = self.c.get("/api/v1/agents/keys")["server_public_key"]
        self.assertEqual(read(os.path.join(work, "server.pub")).strip(), server)
        key = read(os.path.join(work, "agent.pub")).strip()
        k = self.keys()["a1"]
        self.assertEqual((k["public_key"], k["state"]), (key, "approved"))
        self.assertTrue(k["via"].startswith("join token "))
        # The token never shows in the agent's log.
        self.assertNotIn("loomjoin1.", self.agent_log("a1"))
        # A restart needs no token: the stored keys are enough.
        self.c.stop_agent("a1")
        self.c.start_agent("a1", 1, join=False)
        self.c.wait_agents(["a1"])
        run = self.c.wait_run(self.run_of("pipeline: p\ntasks:\n  t:\n    run: echo ok\n"))
        self.assertEqual(run["state"], "succeeded")

    def test_a_used_token_cannot_join_another_agent(self):
        token = self.c.post("/api/v1/agents/tokens", {})["token"]
        env = dict(os.environ, LOOM_JOIN_TOKEN=token)
        self.c.start_agent("b1", 1, env=env, join=False)
        self.c.wait_agents(["b1"])
        p = self.c.start_agent("b2", 1, env=env, join=False)
        self.assertEqual(p.wait(timeout=DEADLINE), 1)
        self.c.agents.pop("b2")
        self.assertIn("already used", self.agent_log("b2"))
        self.assertNotIn("b2", self.keys())

    def test_approve_flow(self):
        server = self.c.get("/api/v1/agents/keys")["server_public_key"]
        self.c.start_agent("gpu7", 1, extra=["--server-key", server], join=False)
        wait_for(lambda: self.keys().get("gpu7", {}).get("state") == "pending",
                 "gpu7's key to be pending")
        key = self.keys()["gpu7"]["public_key"]
        wait_for(lambda: "loom agents approve %s" % key in self.agent_log("gpu7"),
                 "the agent to print the approve command")
        out = self.c.cli("agents", "keys", check=0).stdout
        self.assertIn("pending", out)
        self.c.cli("agents", "approve", key, check=0)
        self.c.wait_agents(["gpu7"])
        self.assertEqual(self.keys()["gpu7"]["state"], "approved")

    def test_revoke_cuts_off_and_retries_elsewhere(self):
        self.c.start_agent("a2", 1)
        self.c.wait_agents(["a2"])
        sub = "pipeline: slow\ntasks:\n  t:\n    run: sleep 30\n"
        run_id = self.run_of(sub)

        def running_on():
            run = self.c.get("/api/v1/runs/%d" % run_id)
            t = run["tasks"][0]
            return t.get("agent") if t["state"] == "running" else None
        wait_for(running_on, "the task to run")
        first = running_on()
        other = "a2" if first == "a1" else "a1"
        self.c.cli("agents", "revoke", first, check=0)
        # Cut off: lost at once, and its task runs again on the other agent.
        agents = {a["name"]: a for a in self.c.get("/api/v1/agents")["agents"]}
        self.assertEqual(agents[first]["state"], "lost")
        wait_for(lambda: running_on() == other, "the task to be retried on %s" % other,
                 timeout=5)
        # The agent is told, says so and exits non-zero.
        self.assertEqual(self.c.agents.pop(first).wait(timeout=DEADLINE), 1)
        self.assertIn("revoked", self.agent_log(first))
        self.assertEqual(self.keys()[first]["state"], "revoked")
        # Its key is refused from then on, even with the stored keys.
        p = self.c.start_agent(first, 1, join=False)
        with self.assertRaises(AssertionError):
            wait_for(lambda: {a["name"]: a["state"] for a in
                              self.c.get("/api/v1/agents")["agents"]}[first] == "connected",
                     "a revoked agent to connect", timeout=1.5)
        p.terminate()
        p.wait(timeout=DEADLINE)
        self.c.agents.pop(first)
        self.c.cli("agents", "revoke", "nobody", check=1)
        self.c.post("/api/v1/runs/%d/cancel" % run_id)

    def test_cli_token_and_bad_input(self):
        out = self.c.cli("agents", "token", "--name", "x1", "--ttl", "10m", check=0).stdout
        self.assertIn("loomjoin1.", out)
        self.assertIn("LOOM_JOIN_TOKEN", out)
        self.c.cli("agents", "approve", "not-a-key", check=2)
        with self.assertRaises(ApiError) as e:
            self.c.post("/api/v1/agents/tokens", {"ttl_s": -1})
        self.assertEqual(e.exception.status, 400)
        with self.assertRaises(ApiError) as e:
            self.c.post("/api/v1/agents/keys/%s/approve" % ("0" * 64), {})
        self.assertEqual(e.exception.status, 400)  # never connected, no name given


if __name__ == "__main__":
    unittest.main()
