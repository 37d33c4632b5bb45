"""The spine end to end: real loomd, two real agents, real processes."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOMD, ApiError, Cluster, ClusterTest, DEADLINE, wait_for  # noqa: E402


def stamp_task(name, needs=(), extra=""):
    """A task that records its start and end in $TRACE, with the time in ns,
    so the test can check the real execution order."""
    needs_line = "    needs: [%s]\n" % ", ".join(needs) if needs else ""
    return ("  %s:\n"
            "    run: echo \"start %s $(date +%%s%%N)\" >> \"$TRACE\"; echo hello from %s; %s"
            " echo \"end %s $(date +%%s%%N)\" >> \"$TRACE\"\n%s") % (
                name, name, name, extra, name, needs_line)


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def read_trace(path):
    events = {}
    with open(path) as f:
        for line in f:
            kind, name, ns = line.split()
            events[(kind, name)] = int(ns)
    return events


class DagRuns(ClusterTest):
    def pipeline(self, name, tasks):
        self.trace = os.path.join(self.c.tmp, name + ".trace")
        return "pipeline: %s\nenv:\n  TRACE: %s\ntasks:\n%s" % (name, self.trace, "".join(tasks))

    def test_diamond_runs_in_dependency_order_with_output_and_states(self):
        src = self.pipeline("diamond", [
            stamp_task("a"), stamp_task("b", ["a"]), stamp_task("c", ["a"]),
            stamp_task("d", ["b", "c"])])
        sub = self.c.submit(src, "diamond.yaml")
        self.assertEqual((sub["pipeline"], sub["version"], sub["created"], sub["tasks"]),
                         ("diamond", 1, True, 4))
        run = self.c.wait_run(self.c.start_run("diamond"))
        self.assertEqual(run["state"], "succeeded")
        tasks = self.tasks(run)
        for name in "abcd":
            t = tasks[name]
            self.assertEqual((t["state"], t["exit_code"], t["attempts"]), ("succeeded", 0, 1),
                             name)
            self.assertIn(t["agent"], ("a1", "a2"))
            self.assertEqual(self.c.log(run["id"], name), b"hello from %s\n" % name.encode())
        ev = read_trace(self.trace)
        self.assertLess(ev[("end", "a")], ev[("start", "b")])
        self.assertLess(ev[("end", "a")], ev[("start", "c")])
        self.assertLess(ev[("end", "b")], ev[("start", "d")])
        self.assertLess(ev[("end", "c")], ev[("start", "d")])
        self.assertEqual(tasks["d"]["needs"], ["b", "c"])

    def test_fan_out_fan_in_of_20_uses_both_agents(self):
        workers = [stamp_task("w%02d" % i, ["start"]) for i in range(20)]
        src = self.pipeline("fan", [stamp_task("start")] + workers +
                            [stamp_task("join", ["w%02d" % i for i in range(20)])])
        self.c.submit(src)
        run = self.c.wait_run(self.c.start_run("fan"))
        self.assertEqual(run["state"], "succeeded")
        tasks = self.tasks(run)
        self.assertEqual(len(tasks), 22)
        self.assertTrue(all(t["state"] == "succeeded" for t in tasks.values()))
        self.assertEqual({t["agent"] for t in tasks.values()}, {"a1", "a2"})
        ev = read_trace(self.trace)
        for i in range(20):
            w = "w%02d" % i
            self.assertLess(ev[("end", "start")], ev[("start", w)])
            self.assertLess(ev[("end", w)], ev[("start", "join")])
        # Two agents with two slots each: never more than four at once.
        points = sorted([(ns, +1) for (k, _), ns in ev.items() if k == "start"] +
                        [(ns, -1) for (k, _), ns in ev.items() if k == "end"])
        running = peak = 0
        for _, d in points:
            running += d
            peak = max(peak, running)
        self.assertLessEqual(peak, 4)
        self.assertGreaterEqual(peak, 2)

    def test_failing_task_fails_run_and_dependents_never_start(self):
        src = self.pipeline("broken", [
            stamp_task("a"),
            "  boom:\n    needs: [a]\n    run: echo about to fail; echo oops >&2; exit 3\n",
            stamp_task("after", ["boom"]),
            stamp_task("later", ["after"]),
            stamp_task("side", ["a"])])
        self.c.submit(src)
        run = self.c.wait_run(self.c.start_run("broken"))
        self.assertEqual(run["state"], "failed")
        t = self.tasks(run)
        self.assertEqual((t["boom"]["state"], t["boom"]["exit_code"]), ("failed", 3))
        self.assertIn("status 3", t["boom"]["error"])
        self.assertEqual(self.c.log(run["id"], "boom"), b"about to fail\noops\n")
        for name in ("after", "later"):
            self.assertEqual((t[name]["state"], t[name]["attempts"]), ("upstream_failed", 0))
            self.assertIsNone(t[name]["agent"])
        self.assertEqual(t["side"]["state"], "succeeded")
        ev = read_trace(self.trace)
        self.assertNotIn(("start", "after"), ev)
        self.assertNotIn(("start", "later"), ev)
        # Succeeded attempts' folders go once loomd has their result; the
        # failed one stays for a look at what went wrong.
        boom_attempt = str(t["boom"]["attempt_id"])

        def folders():
            found = []
            for agent in ("a1", "a2"):
                d = os.path.join(self.c.tmp, "agent-" + agent, "attempts")
                found += os.listdir(d) if os.path.isdir(d) else []
            return found
        wait_for(lambda: folders() == [boom_attempt], "only the failed attempt's folder to remain")

    def test_retries_then_succeeds(self):
        marker = os.path.join(self.c.tmp, "tried")
        src = ("pipeline: flaky\ntasks:\n  t:\n    retries: 2\n"
               "    run: if [ -e %s ]; then echo second; else touch %s; echo first; exit 1; fi\n"
               % (marker, marker))
        self.c.submit(src)
        run = self.c.wait_run(self.c.start_run("flaky"))
        t = self.tasks(run)["t"]
        self.assertEqual((run["state"], t["attempts"], t["exit_code"]), ("succeeded", 2, 0))
        self.assertEqual(self.c.log(run["id"], "t", attempt=1), b"first\n")
        self.assertEqual(self.c.log(run["id"], "t"), b"second\n")
        self.assertEqual(self.c.log(run["id"], "t", attempt=1, offset=2), b"rst\n")
        attempts = self.c.get("/api/v1/runs/%d/tasks/t/attempts" % run["id"])["attempts"]
        self.assertEqual([(a["number"], a["state"], a["exit_code"]) for a in attempts],
                         [(1, "failed", 1), (2, "succeeded", 0)])
        self.assertEqual(attempts[1]["id"], t["attempt_id"])
        for a, out in zip(attempts, (b"first\n", b"second\n")):
            self.assertGreater(a["max_rss_bytes"], 0)
            self.assertLessEqual(a["started_unix_ms"], a["ended_unix_ms"])
            self.assertEqual(a["log_bytes"], len(out))

    def test_argv_form_passes_hostile_text_literally(self):
        target = os.path.join(self.c.tmp, "pwned")
        src = textwrap.dedent("""\
            pipeline: literal
            tasks:
              t:
                run: [printf, "%%s|", "$(touch %s)", "; rm -rf /", "a b"]
            """ % target)
        self.c.submit(src)
        run = self.c.wait_run(self.c.start_run("literal"))
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.c.log(run["id"], "t"),
                         ("$(touch %s)|; rm -rf /|a b|" % target).encode())
        self.assertFalse(os.path.exists(target))

    def test_log_is_streamed_while_the_task_runs(self):
        go = os.path.join(self.c.tmp, "go")
        src = ("pipeline: stream\ntasks:\n  t:\n"
               "    run: echo first; while [ ! -e %s ]; do sleep 0.02; done; echo second\n" % go)
        self.c.submit(src)
        run_id = self.c.start_run("stream")
        url = self.c.url + "/api/v1/runs/%d/tasks/t/log?follow=1" % run_id
        req = urllib.request.Request(url, headers=self.c.auth())
        with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
            self.assertEqual(resp.readline(), b"first\n")  # arrives before the task ends
            run = self.c.get("/api/v1/runs/%d" % run_id)
            self.assertEqual(self.tasks(run)["t"]["state"], "running")
            open(go, "w").close()
            self.assertEqual(resp.read(), b"second\n")  # then the stream ends with the task
        self.assertEqual(self.c.wait_run(run_id)["state"], "succeeded")

    def test_cancel_kills_running_task_and_skips_the_rest(self):
        pidfile = os.path.join(self.c.tmp, "pid")
        src = ("pipeline: slow\ntasks:\n  long:\n    run: echo $$ > %s; exec sleep 60\n"
               "  next:\n    needs: [long]\n    run: echo never\n" % pidfile)
        self.c.submit(src)
        run_id = self.c.start_run("slow")
        pid = int(wait_for(lambda: read_text(pidfile).strip(), "the task to start"))
        self.c.post("/api/v1/runs/%d/cancel" % run_id)
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "cancelled")
        t = self.tasks(run)
        self.assertEqual(t["long"]["state"], "cancelled")
        self.assertEqual((t["next"]["state"], t["next"]["attempts"]), ("cancelled", 0))

        def gone():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True
        wait_for(gone, "the cancelled process to die")
        with self.assertRaises(ApiError) as cm:
            self.c.post("/api/v1/runs/%d/cancel" % run_id)
        self.assertEqual(cm.exception.status, 409)

    def test_timeout_kills_the_task(self):
        src = "pipeline: t\ntasks:\n  t:\n    timeout: 300ms\n    run: sleep 30\n"
        self.c.submit(src)
        run = self.c.wait_run(self.c.start_run("t"))
        t = self.tasks(run)["t"]
        self.assertEqual((run["state"], t["state"]), ("failed", "failed"))
        self.assertIn("timed out", t["error"])


class BadInput(ClusterTest):
    AGENTS = {}

    def status_of(self, method, path, body=None):
        with self.assertRaises(ApiError) as cm:
            self.c.request(method, path, body)
        return cm.exception.status, cm.exception.body

    def test_invalid_dag_gets_positioned_errors_and_stores_nothing(self):
        src = "pipeline: p\ntasks:\n  a:\n    run: echo\n    nedds: [b]\n  b:\n    needs: [zz]\n"
        status, body = self.status_of("POST", "/api/v1/pipelines",
                                      {"file": "p.yaml", "source": src})
        self.assertEqual(status, 422)
        diags = json.loads(body)["diagnostics"]
        self.assertEqual([(d["file"], d["line"], d["col"]) for d in diags],
                         [("p.yaml", 5, 5), ("p.yaml", 6, 3), ("p.yaml", 7, 13)])
        self.assertIn('did you mean "needs"', diags[0]["message"])
        self.assertIn('"run"', diags[1]["message"])
        self.assertIn('unknown task "zz"', diags[2]["message"])
        self.assertEqual(self.c.get("/api/v1/pipelines")["pipelines"], [])

    def test_hostile_dags_are_refused_quickly_through_the_api(self):
        laughs = "pipeline: p\ntasks:\n  a:\n    run: &a [x, x]\n" + "".join(
            "    env%d: &a%d [*a, *a]\n" % (i, i) for i in range(30))
        deep = "pipeline: p\ntasks:\n  a:\n    run: " + "[" * 5000 + "]" * 5000 + "\n"
        junk = bytes(range(1, 256)).decode("latin-1") * 64
        for src in (laughs, deep, junk, "\t", "pipeline: [unclosed"):
            started = time.monotonic()
            status, body = self.status_of("POST", "/api/v1/pipelines", {"source": src})
            self.assertEqual(status, 422)
            self.assertTrue(json.loads(body)["diagnostics"][0]["message"])
            self.assertLess(time.monotonic() - started, 5)
        # A NUL byte cannot even reach the parser: the JSON layer refuses it.
        status, body = self.status_of("POST", "/api/v1/pipelines", {"source": "a\x00b"})
        self.assertEqual(status, 400)
        self.assertIn("request body", json.loads(body)["error"])
        self.assertEqual(self.c.get("/api/v1/pipelines")["pipelines"], [])

    def test_bad_requests_get_4xx_with_a_message(self):
        cases = [
            ("POST", "/api/v1/pipelines", b"{not json", 400, "line 1"),
            ("POST", "/api/v1/pipelines", b"[1, 2]", 400, "JSON object"),
            ("POST", "/api/v1/pipelines", {"source": 7}, 400, '"source"'),
            ("POST", "/api/v1/pipelines", {"source": "x" * (9 << 20)}, 413, "over"),
            ("GET", "/api/v1/nothing", None, 404, "no such path"),
            ("GET", "/elsewhere", None, 404, "/api/v1"),
            ("DELETE", "/api/v1/runs", None, 405, "not allowed"),
            ("GET", "/api/v1/runs/abc", None, 400, "not a number"),
            ("GET", "/api/v1/runs/99", None, 404, "no run 99"),
            ("GET", "/api/v1/runs?limit=0", None, 400, "limit"),
            ("GET", "/api/v1/runs/1?wait=-3", None, 400, "wait"),
            ("POST", "/api/v1/pipelines/nope/runs", {}, 404, "no pipeline"),
            ("GET", "/api/v1/runs/1/tasks/x/log", None, 404, "no task"),
        ]
        for method, path, body, want, text in cases:
            status, msg = self.status_of(method, path, body)
            self.assertEqual(status, want, (method, path, msg))
            self.assertIn(text, json.loads(msg)["error"], (method, path))
        # and loomd is still serving
        self.assertEqual(self.c.get("/api/v1/health")["status"], "ok")

    def test_resubmitting_the_same_file_is_not_a_new_version(self):
        src = "pipeline: p\ntasks:\n  a:\n    run: echo 1\n"
        self.assertEqual(self.c.submit(src)["version"], 1)
        again = self.c.submit(src)
        self.assertEqual((again["version"], again["created"]), (1, False))
        changed = self.c.submit(src.replace("echo 1", "echo 2"))
        self.assertEqual((changed["version"], changed["created"]), (2, True))
        p = self.c.get("/api/v1/pipelines/p")
        self.assertEqual([v["version"] for v in p["versions"]], [1, 2])
        self.assertIn("echo 2", p["source"])


class WorkFolders(ClusterTest):
    AGENTS = {"solo": 1}

    def test_each_attempt_starts_in_an_empty_folder(self):
        """Folders of finished attempts are emptied and reused: the next
        attempt must never see what an earlier one left."""
        # Odd tasks leave nothing behind (their folder is reused at once, on
        # the agent's loop); even ones leave files (emptied on its pool).
        tasks = "".join("  t%d:\n    run: ls -A%s\n%s" % (
            i, "; mkdir -p junk/deep; echo x > junk/deep/f%d; echo y > .hidden" % i
            if i % 2 == 0 else "", "    needs: [t%d]\n" % (i - 1) if i else "")
            for i in range(8))
        self.c.submit("pipeline: reuse\ntasks:\n" + tasks)
        run = self.c.wait_run(self.c.start_run("reuse"))
        self.assertEqual(run["state"], "succeeded")
        for i in range(8):
            self.assertEqual(self.c.log(run["id"], "t%d" % i), b"", "t%d saw leftovers" % i)
        attempts = os.path.join(self.c.tmp, "agent-solo", "attempts")
        wait_for(lambda: os.listdir(attempts) == [], "the attempt folders to be cleared")


class Restarts(unittest.TestCase):
    def test_restart_keeps_history_and_logs(self):
        c = Cluster()
        try:
            c.start_loomd()
            c.start_agent("a1")
            c.wait_agents(["a1"])
            c.submit("pipeline: p\ntasks:\n  x:\n    run: echo one; echo two >&2\n"
                     "  y:\n    needs: [x]\n    run: [echo, three]\n")
            first = c.wait_run(c.start_run("p"))
            self.assertEqual(first["state"], "succeeded")
            log_x = c.log(first["id"], "x")
            self.assertEqual(log_x, b"one\ntwo\n")
            self.assertEqual(c.stop_loomd(), 0)

            c.start_loomd()  # same state folder, new ports
            c.stop_agent("a1")
            c.start_agent("a1")
            c.wait_agents(["a1"])
            again = c.get("/api/v1/runs/%d" % first["id"])
            self.assertEqual(again, first)
            self.assertEqual(c.log(first["id"], "x"), log_x)
            self.assertEqual(c.log(first["id"], "y"), b"three\n")
            second = c.wait_run(c.start_run("p"))
            self.assertEqual(second["state"], "succeeded")
            self.assertGreater(second["id"], first["id"])
            runs = c.get("/api/v1/runs?pipeline=p")["runs"]
            self.assertEqual([r["id"] for r in runs], [second["id"], first["id"]])
        except Exception:
            print(c.logs())
            raise
        finally:
            c.close()

    def test_second_loomd_on_the_same_state_refuses_to_start(self):
        c = Cluster()
        try:
            c.start_loomd()
            p = subprocess.run([LOOMD, "--state-dir", c.state, "--http", "127.0.0.1:0",
                                "--bind", "tcp://127.0.0.1:*"], capture_output=True, text=True,
                               timeout=DEADLINE)
            self.assertEqual(p.returncode, 1)
            self.assertIn("is in use by another loomd (pid %d)" % c.loomd.pid, p.stderr)
            self.assertEqual(c.get("/api/v1/health")["status"], "ok")  # the first is unharmed
        finally:
            c.close()

    def test_agent_reconnects_after_loomd_restart_and_task_finishes(self):
        """loomd goes away while a task runs; the agent keeps running it and
        reports it, with every log byte, once loomd is back."""
        c = Cluster()
        try:
            c.start_loomd()
            c.start_agent("a1")
            c.wait_agents(["a1"])
            go = os.path.join(c.tmp, "go")
            c.submit("pipeline: p\ntasks:\n  t:\n    run: echo before; "
                     "while [ ! -e %s ]; do sleep 0.02; done; echo after\n"
                     "  u:\n    needs: [t]\n    run: echo downstream\n" % go)
            run_id = c.start_run("p")
            wait_for(lambda: c.log(run_id, "t") == b"before\n", "first output")
            self.assertEqual(c.stop_loomd(signal.SIGKILL), -signal.SIGKILL)
            open(go, "w").close()  # the task finishes while loomd is down
            c.start_loomd()
            run = c.wait_run(run_id)
            self.assertEqual(run["state"], "succeeded", run)
            t = {x["name"]: x for x in run["tasks"]}
            self.assertEqual(t["t"]["attempts"], 1)  # not rerun: reconciled
            self.assertEqual(c.log(run_id, "t"), b"before\nafter\n")
            self.assertEqual(c.log(run_id, "u"), b"downstream\n")
        except Exception:
            print(c.logs())
            raise
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
