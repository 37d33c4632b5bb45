"""`loom watch RUN` (and `loom run --wait` in a terminal): plain lines when
stdout is a pipe, a view redrawn in place in a pseudo-terminal."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import unittest

from loomtest import CLI, DEADLINE, ClusterTest, wait_for

DAG = """\
pipeline: w
tasks:
  a: {run: 'echo a'}
  b: {run: 'echo b', needs: [a]}
  bad: {run: 'exit 3', needs: [a]}
  after: {run: 'true', needs: [bad]}
"""

CLOCK = r"\d\d:\d\d:\d\d"


def run_in_pty(args, env, rows=24, cols=100, on_output=None):
    """Runs args with stdout and stderr on a pseudo-terminal of the given
    size; returns (exit status, everything written). on_output(text, proc)
    may act on the output seen so far."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    end = time.monotonic() + DEADLINE * 2
    while time.monotonic() < end:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
            if on_output:
                on_output(out.decode(errors="replace"), p)
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(timeout=DEADLINE), out.decode(errors="replace")


def last_frame(text):
    """The text of the last redraw: after the last cursor-up movement."""
    parts = re.split(r"\r\x1b\[\d+A", text)
    return parts[-1]


def plain(text):
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


class Watch(ClusterTest):
    AGENTS = {"w1": 2}

    def test_pipe_prints_one_line_per_change_and_exits_1_on_failure(self):
        self.c.submit(DAG)
        run = self.c.start_run("w")
        p = self.c.cli("watch", str(run))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertNotIn("\x1b", p.stdout)
        lines = p.stdout.splitlines()
        pats = [r"a running on w1", r"a succeeded in \S+", r"b running on w1",
                r"b succeeded in \S+", r"bad running on w1", r"bad failed in \S+ \(.*3.*\)",
                r"after upstream_failed( \(.*\))?", r"run %d failed in \S+" % run]
        self.assertEqual(len(lines), len(pats), p.stdout)
        for pat in pats:
            matching = [i for i, l in enumerate(lines) if re.fullmatch(CLOCK + " " + pat, l)]
            self.assertEqual(len(matching), 1, "%r in:\n%s" % (pat, p.stdout))
        pos = {pat: [i for i, l in enumerate(lines) if re.fullmatch(CLOCK + " " + pat, l)][0]
               for pat in pats}
        # Causal order: a ends before b and bad start; the run's end is last.
        self.assertLess(pos[pats[1]], pos[pats[2]])
        self.assertLess(pos[pats[1]], pos[pats[4]])
        self.assertLess(pos[pats[5]], pos[pats[6]])
        self.assertEqual(pos[pats[7]], len(lines) - 1)
        # A run that succeeded: exit status 0.
        ok = self.c.submit("pipeline: ok\ntasks:\n  t: {run: 'true'}\n")
        self.assertTrue(ok)
        run2 = self.c.start_run("ok")
        p = self.c.cli("watch", str(run2))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout.splitlines()[-1], CLOCK + " run %d succeeded in " % run2)
        # Bad input: a clear error, exit 2; an unknown run, exit 1.
        self.assertEqual(self.c.cli("watch", "x").returncode, 2)
        p = self.c.cli("watch", "999999")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no run 999999", p.stderr)

    def test_terminal_view_redraws_in_place_and_restores_the_cursor(self):
        self.c.submit(DAG.replace("echo a", "sleep 0.5; echo a"))
        run = self.c.start_run("w")
        rc, out = run_in_pty([CLI, "watch", str(run)], self.c.cli_env(), rows=30)
        self.assertEqual(rc, 1, out)
        self.assertTrue(out.startswith("\x1b[?25l"), repr(out[:40]))
        self.assertTrue(out.rstrip().endswith("\x1b[?25h"), repr(out[-40:]))
        # Redrawn in place: the cursor moved back up over the previous frame.
        self.assertRegex(out, r"\r\x1b\[\d+A")
        frame = plain(last_frame(out))
        for name, state in (("a", "succeeded"), ("b", "succeeded"), ("bad", "failed"),
                            ("after", "upstream_failed")):
            self.assertRegex(frame, r"(?m)^  %s +%s\b" % (name, state), frame)
        self.assertIn("run %d  w  failed" % run, frame)
        self.assertIn("4/4 done  2 failed  0 running", frame)

    def test_run_wait_in_a_terminal_shows_the_view(self):
        self.c.submit("pipeline: ok\ntasks:\n  t: {run: 'echo hi'}\n")
        rc, out = run_in_pty([CLI, "run", "ok", "--logs"], self.c.cli_env())
        self.assertEqual(rc, 0, out)
        self.assertIn("\x1b[?25l", out)
        frame = plain(last_frame(out))
        self.assertRegex(frame, r"(?m)^  t +succeeded +1 attempt")
        self.assertIn("hi", frame)  # --logs: the log follows the view

    def test_a_thousand_tasks_fit_the_terminal(self):
        dag = "pipeline: big\ntasks:\n" + "".join(
            "  t%d: {run: 'true'}\n" % i for i in range(1000))
        self.c.submit(dag)
        run = self.c.start_run("big")
        rc, out = run_in_pty([CLI, "watch", str(run)], self.c.cli_env(), rows=20, cols=80)
        self.assertEqual(rc, 0, out[-2000:])
        frames = re.split(r"\r\x1b\[\d+A", out)
        for f in frames:
            # Never more lines than the terminal has (the cursor rests on one).
            self.assertLessEqual(f.count("\n"), 19, plain(f))
            for line in plain(f).split("\n"):
                self.assertLessEqual(len(line), 80, line)
        frame = plain(frames[-1])
        self.assertRegex(frame, r"\u2026 \d+ more succeeded")
        self.assertIn("1000/1000 done", frame)

    def test_ctrl_c_restores_the_cursor(self):
        self.c.submit("pipeline: slow\ntasks:\n  s: {run: 'sleep 60'}\n")
        run = self.c.start_run("slow")
        sent = []

        def interrupt(text, proc):
            if not sent and "s " in plain(text) and "running" in plain(text):
                proc.send_signal(signal.SIGINT)
                sent.append(True)
        rc, out = run_in_pty([CLI, "watch", str(run)], self.c.cli_env(), on_output=interrupt)
        self.assertTrue(sent, out)
        self.assertEqual(rc, -signal.SIGINT)
        self.assertIn("\x1b[?25h", out[out.rindex("\x1b[?25l"):])
        self.c.post("/api/v1/runs/%d/cancel" % run)


if __name__ == "__main__":
    unittest.main()
