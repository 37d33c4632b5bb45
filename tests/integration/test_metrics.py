"""GET /metrics: Prometheus' text format from a real loomd that ran real work
(a pipeline with successes and a failure, an event trigger, HTTP calls). The
values must match what happened, and the output must pass
`promtool check metrics` (Debian's prometheus package) and a strict parser."""
import re
import shutil
import subprocess
import unittest
import urllib.error
import urllib.request

from loomtest import ApiError, ClusterTest, wait_for

PIPELINE = """\
pipeline: m
tasks:
  a: {run: 'echo a'}
  b: {run: 'echo b', needs: [a]}
  bad: {run: 'echo oops; exit 3', needs: [a]}
  after_bad: {run: 'true', needs: [bad]}
"""

EVENTED = """\
pipeline: ev
triggers:
  - event: ping
tasks:
  one: {run: 'echo one'}
"""

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)?\})? (\S+)$" % (NAME, LABEL, LABEL))


def parse(text):
    """A strict reading of the 0.0.4 text format: every family has HELP and
    TYPE before its samples, sample names belong to the family announced,
    label values are escaped, values are numbers. Returns
    {(name, frozenset(labels)): value} and {family: type}."""
    samples, types = {}, {}
    family = None
    assert text.endswith("\n"), "the exposition must end with a newline"
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP "):
            family = line.split(" ")[2]
            assert family not in types, "line %d: family %s twice" % (n, family)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name == family, "line %d: TYPE %s after HELP %s" % (n, name, family)
            assert typ in ("counter", "gauge", "histogram"), line
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        assert m, "line %d is not a sample: %r" % (n, line)
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        base = family
        allowed = {base} if types[base] != "histogram" else {
            base + "_bucket", base + "_sum", base + "_count"}
        assert name in allowed, "line %d: %s outside family %s" % (n, name, family)
        pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)
        v = float(value)  # raises on anything else ("+Inf" and "NaN" parse)
        key = (name, frozenset(pairs))
        assert key not in samples, "line %d: duplicate series %s" % (n, line)
        samples[key] = v
    return samples, types


def value(samples, name, **labels):
    want = frozenset(labels.items())
    got = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    return sum(got)


class Metrics(ClusterTest):
    AGENTS = {"m1": 2}

    def scrape(self, path="/metrics", token=None):
        req = urllib.request.Request(self.c.url + path, headers=self.c.auth(token))
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.assertTrue(resp.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            return resp.read().decode()

    def test_values_match_what_happened(self):
        self.c.submit(PIPELINE)
        self.c.submit(EVENTED)
        runs = [self.c.start_run("m") for _ in range(2)]
        for r in runs:
            self.assertEqual(self.c.wait_run(r)["state"], "failed")
        ev = self.c.post("/api/v1/events/ping", {"x": 1})
        run_ev = ev["outcome"][0]["run_id"]
        self.assertEqual(self.c.wait_run(run_ev)["state"], "succeeded")
        # a filtered-out request and a 404, for the HTTP counters
        with self.assertRaises(ApiError):
            self.c.get("/api/v1/runs/999999")

        text = self.scrape()
        s, types = parse(text)
        # Tasks: per run a, b succeed, bad fails, after_bad upstream_failed; plus "one".
        self.assertEqual(value(s, "loom_tasks_ended_total", state="succeeded"), 2 * 2 + 1)
        self.assertEqual(value(s, "loom_tasks_ended_total", state="failed"), 2)
        self.assertEqual(value(s, "loom_tasks_ended_total", state="upstream_failed"), 2)
        self.assertEqual(value(s, "loom_runs_ended_total", state="failed"), 2)
        self.assertEqual(value(s, "loom_runs_ended_total", state="succeeded"), 1)
        self.assertEqual(value(s, "loom_runs", state="running"), 0)
        self.assertEqual(value(s, "loom_queue_depth"), 0)
        self.assertEqual(value(s, "loom_tasks"), 0)
        # One dispatch per started task: 3 per "m" run, 1 for the event run.
        dispatches = 2 * 3 + 1
        self.assertEqual(value(s, "loom_dispatch_latency_seconds_count"), dispatches)
        self.assertEqual(value(s, "loom_dispatch_latency_seconds_bucket", le="+Inf"), dispatches)
        self.assertEqual(types["loom_dispatch_latency_seconds"], "histogram")
        # Buckets are cumulative.
        buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in s.items()
                         if n == "loom_dispatch_latency_seconds_bucket")
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        # The event trigger: one decision, one trigger-to-start observation.
        self.assertEqual(value(s, "loom_trigger_decisions_total", kind="event",
                               decision="started"), 1)
        self.assertEqual(value(s, "loom_trigger_start_latency_seconds_count", kind="event"), 1)
        self.assertEqual(value(s, "loom_trigger_start_latency_seconds_count", kind="schedule"), 0)
        # Agents, from the heartbeats and reservations.
        self.assertEqual(value(s, "loom_agents", state="connected"), 1)
        self.assertEqual(value(s, "loom_agent_up", agent="m1"), 1)
        self.assertGreater(value(s, "loom_agent_cpus", agent="m1"), 0)
        self.assertGreater(value(s, "loom_agent_memory_bytes", agent="m1"), 0)
        self.assertEqual(value(s, "loom_agent_tasks_running", agent="m1"), 0)
        # HTTP: the 404 and the submits, by route pattern.
        self.assertEqual(value(s, "loom_http_requests_total", route="runs/*", code="404"), 1)
        self.assertEqual(value(s, "loom_http_requests_total", method="POST", route="pipelines",
                               code="201"), 2)
        # process_* from /proc
        self.assertGreater(value(s, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(s, "process_open_fds"), 3)
        self.assertGreater(value(s, "process_start_time_seconds"), 1.6e9)
        self.assertEqual(types["process_cpu_seconds_total"], "counter")

        # A second scrape counts the first; the stored log bytes appear once
        # the background walk has run.
        def second():
            s2, _ = parse(self.scrape("/api/v1/metrics"))
            got = value(s2, "loom_http_requests_total", route="metrics", code="200")
            return s2 if got >= 1 and value(s2, "loom_log_bytes") > 0 else None
        s2 = wait_for(second, "the scrape to count itself and the log bytes to be measured")
        self.assertGreater(value(s2, "loom_http_request_duration_seconds_count", route="metrics"),
                           0)

        # And promtool agrees that it is valid (its linter included).
        promtool = shutil.which("promtool")
        if promtool is None:
            self.fail("promtool is missing: scripts/install-deps.sh installs prometheus")
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_scrape_needs_a_token(self):
        for path in ("/metrics", "/api/v1/metrics"):
            req = urllib.request.Request(self.c.url + path)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            self.assertEqual(e.exception.code, 401, path)
        read = self.c.post("/api/v1/tokens", {"role": "read", "name": "prometheus"})["token"]
        parse(self.scrape(token=read))


class JsonLogs(unittest.TestCase):
    """loomd and loom-agent with --log-format json (and LOOM_LOG_FORMAT):
    every line of their logs is one JSON object with the fields."""

    def test_every_line_is_a_json_object(self):
        import datetime
        import json
        import os
        from loomtest import Cluster
        c = Cluster()
        try:
            c.start_loomd(extra=["--log-format", "json"])
            c.start_agent("j1", env=dict(os.environ, LOOM_LOG_FORMAT="json"))
            c.wait_agents(["j1"])
            c.submit(PIPELINE)
            self.assertEqual(c.wait_run(c.start_run("m"))["state"], "failed")
            # a refused token is logged too (a message with a quoted reason)
            with self.assertRaises(ApiError):
                c.get("/api/v1/runs", token="loom_1_" + "0" * 64)
        finally:
            c.close(keep=True)
        fields_seen = set()
        for name, component in (("loomd.log", "loomd"), ("agent-j1.log", "agent")):
            with open(os.path.join(c.tmp, name)) as f:
                lines = f.read().splitlines()
            self.assertGreater(len(lines), 5, name)
            for line in lines:
                try:
                    obj = json.loads(line)
                except ValueError:
                    self.fail("%s: not JSON: %r" % (name, line))
                self.assertIsInstance(obj, dict, line)
                for k in ("ts", "level", "component", "msg"):
                    self.assertIn(k, obj, line)
                self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                datetime.datetime.strptime(obj["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
                self.assertIn(obj["level"], ("debug", "info", "warn", "error"))
                self.assertEqual(obj["component"], component)
                fields_seen.update(k for k in obj if k not in ("ts", "level", "component", "msg"))
        # The messages' key=value pairs became fields (e.g. "run ended run=1 ... state=failed").
        self.assertTrue({"run", "task", "state", "pipeline"} <= fields_seen, fields_seen)
        import shutil as sh
        sh.rmtree(c.tmp, ignore_errors=True)

    def test_a_bad_format_is_refused(self):
        from loomtest import LOOMD, AGENT
        import os
        p = subprocess.run([LOOMD, "--log-format", "xml"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--log-format xml: want text or json", p.stderr)
        p = subprocess.run([AGENT, "--version"], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, LOOM_LOG_FORMAT="yaml"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("LOOM_LOG_FORMAT yaml: expected text or json", p.stderr)


if __name__ == "__main__":
    unittest.main()
