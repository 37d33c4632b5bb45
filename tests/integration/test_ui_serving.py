"""The web UI's server side: /ui/ assets embedded in loomd (types, caching,
the app's routes, no token needed) and the run event stream the UI follows
(GET /api/v1/runs/ID/events, server-sent events)."""
import json
import os
import re
import tempfile
import unittest
import urllib.error
import urllib.request

from loomtest import DEADLINE, ApiError, ClusterTest

GATED = """pipeline: gated
tasks:
  a:
    run: "while [ ! -e {gate}/a ]; do sleep 0.02; done"
  b:
    needs: a
    run: "while [ ! -e {gate}/b ]; do sleep 0.02; done"
"""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


class UiTest(ClusterTest):
    AGENTS = {"a1": 2}

    def fetch(self, path, method="GET", headers=None):
        """(status, headers, body) without a token and without following redirects."""
        opener = urllib.request.build_opener(NoRedirect)
        req = urllib.request.Request(self.c.url + path, method=method, headers=headers or {})
        try:
            with opener.open(req, timeout=DEADLINE) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def test_assets_load_without_a_token_and_cache_by_version(self):
        status, headers, _ = self.fetch("/")
        self.assertEqual((status, headers["Location"]), (302, "/ui/"))
        status, headers, index = self.fetch("/ui/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertEqual(headers["Cache-Control"], "no-cache")
        self.assertIn("script-src 'self'", headers["Content-Security-Policy"])
        # The app's own routes get the same page.
        for route in ("/ui/runs/42", "/ui/runs/42/tasks/train", "/ui/agents"):
            self.assertEqual(self.fetch(route)[2], index, route)
        app = re.search(rb'src="(/ui/_/[0-9a-f]{16}/app\.js)"', index).group(1).decode()
        status, headers, body = self.fetch(app)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/javascript; charset=utf-8")
        self.assertIn("immutable", headers["Cache-Control"])
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "ui", "app.js"), "rb") as f:
            self.assertEqual(body, f.read())
        status, _, body = self.fetch(app, headers={"If-None-Match": headers["ETag"]})
        self.assertEqual((status, body), (304, b""))
        for path, ctype in (("graph.js", "text/javascript"), ("style.css", "text/css"),
                            ("favicon.svg", "image/svg+xml")):
            self.assertTrue(self.fetch(app.replace("app.js", path))[1]["Content-Type"]
                            .startswith(ctype), path)
        # An older page's version still gets today's file, but not as immutable.
        status, headers, _ = self.fetch("/ui/_/0000000000000000/app.js")
        self.assertEqual((status, headers["Cache-Control"]), (200, "no-cache"))
        self.assertEqual(self.fetch("/ui/_/0000000000000000/nope.js")[0], 404)
        self.assertEqual(self.fetch("/ui/", method="POST")[0], 405)
        # A bad token on a page load is ignored; data still needs a good one.
        self.assertEqual(self.fetch("/ui/", headers={"Authorization": "Bearer x"})[0], 200)
        self.assertEqual(self.fetch("/api/v1/runs")[0], 401)

    def events(self, run_id):
        """Yields (name, data) from the run's event stream until it ends."""
        req = urllib.request.Request(self.c.url + "/api/v1/runs/%d/events" % run_id,
                                     headers=self.c.auth())
        with urllib.request.urlopen(req, timeout=DEADLINE) as r:
            self.assertEqual(r.headers["Content-Type"], "text/event-stream; charset=utf-8")
            name, data = None, []
            for line in r:
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and data:
                    yield name, json.loads("\n".join(data))
                    name, data = None, []

    def test_run_events_follow_each_task_and_end_with_the_run(self):
        gate = tempfile.mkdtemp(dir=self.c.tmp)
        self.c.submit(GATED.format(gate=gate))
        run_id = self.c.start_run("gated")
        states = {}
        seen = []
        for name, ev in self.events(run_id):
            self.assertEqual(name, "run")
            self.assertEqual(ev["full"], not seen)
            if ev["full"]:
                self.assertEqual({t["name"] for t in ev["tasks"]}, {"a", "b"})
            else:
                # Later events carry only what changed.
                self.assertTrue(ev["tasks"] or ev["run"]["state"] != seen[-1]["run"]["state"])
            for t in ev["tasks"]:
                states[t["name"]] = t["state"]
            seen.append(ev)
            # Open each task's gate once the stream shows it running.
            for task in ("a", "b"):
                if states.get(task) == "running" and not os.path.exists(os.path.join(gate, task)):
                    open(os.path.join(gate, task), "w").close()
        self.assertEqual(seen[-1]["run"]["state"], "succeeded")
        self.assertEqual(states, {"a": "succeeded", "b": "succeeded"})
        history = [(t["name"], t["state"]) for ev in seen for t in ev["tasks"]]
        self.assertLess(history.index(("a", "succeeded")), history.index(("b", "running")))
        # An ended run: one event, then the end.
        again = list(self.events(run_id))
        self.assertEqual(len(again), 1)
        self.assertEqual(again[0][1]["run"]["state"], "succeeded")

    def test_run_events_of_an_unknown_run(self):
        with self.assertRaises(ApiError) as e:
            self.c.get("/api/v1/runs/999/events")
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(ApiError) as e:
            self.c.get("/api/v1/runs/x/events")
        self.assertEqual(e.exception.status, 400)


if __name__ == "__main__":
    unittest.main()
