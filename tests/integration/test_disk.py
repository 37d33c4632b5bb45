"""loomd's state folder on a small filesystem that fills up (a tmpfs mounted
for the test, so it needs root, as CI runs). With room below the reserve
(--min-free) loomd refuses new work with a clear error, holds log chunks
unacknowledged (the agent keeps them) and resumes by itself once space is
freed; when even the reserve is gone and a commit fails, loomd stops, and a
restart after space is freed finishes every run with nothing lost or
recorded twice and the database intact."""
import os
import shutil
import sqlite3
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ApiError, Cluster, wait_for  # noqa: E402

LINES = 400
# Prints numbered lines for about LINES/100 seconds, so output streams while
# the disk fills and is freed.
TALKER = """
pipeline: talker
tasks:
  talk:
    run: |
      i=1
      while [ $i -le %d ]; do
        echo "line $i of the talker, padded to be a little longer than the others"
        i=$((i + 1)); sleep 0.01
      done
""" % LINES
OTHER = """
pipeline: other
tasks:
  hello:
    run: [echo, hello]
"""


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskFull(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs (CI runs as root)")
        self.c = Cluster()
        os.makedirs(self.c.state)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", self.c.state],
                       check=True)
        self.filler = os.path.join(self.c.state, "filler")

    def tearDown(self):
        try:
            self.c.close(keep=True)
        finally:
            subprocess.run(["umount", "-l", self.c.state])
            shutil.rmtree(self.c.tmp, ignore_errors=True)

    def fill(self, leave):
        """Fills the state filesystem until `leave` bytes are free (or no
        more fits: loomd writes beside us). Unbuffered, so that closing the
        file has nothing left to write that could fail."""
        with open(self.filler, "ab", buffering=0) as f:
            while free_bytes(self.c.state) > leave:
                want = free_bytes(self.c.state) - leave
                try:
                    f.write(b"\0" * min(want, 1 << 20))
                except OSError:
                    break

    def unfill(self):
        os.unlink(self.filler)

    def integrity(self):
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.c.state, "loom.db"), uri=True)
        try:
            return db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()

    def talker_log_complete(self, run_id):
        log = self.c.log(run_id, "talk").decode()
        numbers = [int(line.split()[1]) for line in log.splitlines() if line.startswith("line ")]
        self.assertEqual(numbers, list(range(1, LINES + 1)), "log lines lost, repeated or reordered")

    def test_below_reserve_refuses_new_work_and_resumes(self):
        self.c.start_loomd(extra=["--min-free", "12M"])
        self.c.start_agent("a1", 2)
        self.c.wait_agents(["a1"])
        self.c.submit(TALKER)
        run = self.c.start_run("talker")
        wait_for(lambda: self.c.log(run, "talk").count(b"\n") >= 20, "the talker to talk")

        self.fill(leave=6 << 20)
        # New work is refused, clearly, and nothing of it is kept.
        with self.assertRaises(ApiError) as e:
            self.c.submit(OTHER)
        self.assertEqual(e.exception.status, 507)
        self.assertIn("nearly full", e.exception.body)
        with self.assertRaises(ApiError) as e:
            self.c.start_run("talker")
        self.assertEqual(e.exception.status, 507)
        names = [p["name"] for p in self.c.get("/api/v1/pipelines")["pipelines"]]
        self.assertNotIn("other", names)
        p = self.c.cli("submit", os.path.join(os.path.dirname(__file__), "..", "..",
                                              "dag-examples", "quickstart.yaml"))
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("nearly full", p.stderr)
        # Reads still work, and loomd says why in /health-independent ways.
        self.assertEqual(self.c.get("/api/v1/runs/%d" % run)["id"], run)

        self.unfill()
        # Work resumes by itself: the talker's run ends with every line kept.
        self.assertEqual(self.c.wait_run(run)["state"], "succeeded")
        self.talker_log_complete(run)
        self.c.submit(OTHER)
        other = self.c.start_run("other")
        self.assertEqual(self.c.wait_run(other)["state"], "succeeded")
        self.assertIsNone(self.c.loomd.poll(), "loomd must not have stopped")
        self.assertEqual(self.integrity(), "ok")

    def test_no_room_at_all_stops_loomd_and_a_restart_finishes(self):
        # No reserve: the disk fills completely under a running task.
        self.c.start_loomd(extra=["--min-free", "0"])
        self.c.start_agent("a1", 2)
        self.c.wait_agents(["a1"])
        self.c.submit(TALKER)
        run = self.c.start_run("talker")
        wait_for(lambda: self.c.log(run, "talk").count(b"\n") >= 20, "the talker to talk")
        self.fill(leave=0)
        # The log file cannot grow; the talker ends; its result must be
        # committed -- loomd either manages (small writes can still fit in
        # pages SQLite has) or stops rather than act on unrecorded state.
        def ended_or_stopped():
            if self.c.loomd.poll() is not None:
                return "stopped"
            try:
                state = self.c.get("/api/v1/runs/%d" % run)["state"]
            except (ApiError, OSError):
                return None
            return "ended" if state not in ("queued", "running") else None
        outcome = wait_for(ended_or_stopped, "the run to end or loomd to stop", timeout=30)
        print("with no room at all, loomd", outcome)
        self.unfill()
        if outcome == "stopped":
            self.c.loomd = None
            self.c.start_loomd(extra=["--min-free", "0"])
        self.assertEqual(self.c.wait_run(run)["state"], "succeeded")
        self.talker_log_complete(run)
        self.assertEqual(self.integrity(), "ok")
        db = sqlite3.connect(os.path.join(self.c.state, "loom.db"))
        try:
            ended = db.execute(
                "SELECT COUNT(*) FROM attempts WHERE state = 'succeeded'").fetchone()[0]
        finally:
            db.close()
        self.assertEqual(ended, 1, "the talker's success must be recorded exactly once")


if __name__ == "__main__":
    unittest.main()
