"""The wall clock stepped for real under a running loomd and agent: an hour
forward, back, and forward again, mid-run. libfaketime (Debian's
libfaketime, LD_PRELOADed) moves CLOCK_REALTIME for loomd and the agent,
re-reading the time from a file each second; the monotonic clock is left
alone, as an NTP step leaves it. Liveness runs on the monotonic clock, so no
agent may be declared lost and no task restarted; schedules run on the wall
clock, so an hourly schedule with `catchup: latest` fires exactly once for
the hour boundary the first step crosses, and never again for the same fire
time when the clock goes back and forward over it."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ClusterTest, wait_for  # noqa: E402

FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

SLEEPER = """
pipeline: sleeper
tasks:
  a:
    run: sleep 3
  b:
    needs: a
    run: sleep 3
  c:
    needs: b
    run: date +%s
"""
HOURLY = """
pipeline: hourly
triggers:
  - schedule: "0 * * * *"
    catchup: latest
tasks:
  t:
    run: [echo, tick]
"""


class SteppedWallClock(ClusterTest):
    AGENTS = {}

    def setUp(self):
        if not os.path.exists(FAKETIME):
            self.fail("%s is missing: scripts/install-deps.sh installs libfaketime" % FAKETIME)
        self.offset_file = None
        super().setUp()  # loomd without faketime; replaced below

    def step(self, spec):
        with open(self.offset_file, "w") as f:
            f.write(spec + "\n")

    def schedule_runs(self):
        return [r for r in self.c.get("/api/v1/runs?pipeline=hourly")["runs"]]

    def test_an_hour_forward_back_and_forward(self):
        c = self.c
        c.stop_loomd()
        self.offset_file = os.path.join(c.tmp, "faketime")
        # Absolute fake times (libfaketime restarts its clock from the time
        # given whenever the file changes), so the hour boundary crossed is
        # the same whatever the real time of day: a relative offset made
        # the test fire twice when it ran across a real hour boundary.
        self.step("@2030-01-01 10:30:00")
        env = {"LD_PRELOAD": FAKETIME, "FAKETIME_TIMESTAMP_FILE": self.offset_file,
               "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
               # the debug build's AddressSanitizer wants to come first
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            c.start_loomd()
            c.start_agent("a1", 2, env=dict(os.environ))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        c.wait_agents(["a1"])
        c.submit(HOURLY)
        c.submit(SLEEPER)
        run = c.start_run("sleeper")
        wait_for(lambda: self.tasks(c.get("/api/v1/runs/%d" % run))["a"]["state"] == "running",
                 "the first task to run")

        self.step("@2030-01-01 11:30:00")
        # loomd notices within a liveness tick and the hourly schedule fires
        # once, for the boundary the step crossed.
        wait_for(lambda: len(self.schedule_runs()) == 1, "the hourly schedule to fire",
                 timeout=15)
        self.step("@2030-01-01 10:30:05")
        time.sleep(2.5)  # two re-reads of the offset and liveness ticks: nothing may fire
        self.step("@2030-01-01 11:30:10")
        time.sleep(2.5)
        self.assertEqual(len(self.schedule_runs()), 1, "the same fire time fired again")

        done = c.wait_run(run)
        self.assertEqual(done["state"], "succeeded")
        tasks = self.tasks(done)
        self.assertEqual([tasks[t]["attempts"] for t in "abc"], [1, 1, 1],
                         "a task was restarted")
        agents = c.get("/api/v1/agents")["agents"]
        self.assertEqual([(a["name"], a["state"]) for a in agents], [("a1", "connected")])
        with open(os.path.join(c.tmp, "loomd.log"), errors="replace") as f:
            log = f.read()
        self.assertNotIn("agent lost", log)
        self.assertIn("the wall clock stepped +3", log)
        decisions = c.get("/api/v1/pipelines/hourly/decisions")["decisions"]
        self.assertEqual([d["decision"] for d in decisions].count("started"), 1, decisions)
        self.assertEqual(c.wait_run(self.schedule_runs()[0]["id"])["state"], "succeeded")


if __name__ == "__main__":
    unittest.main()
