"""Artifacts end to end through real loomd and two real agents: a file made
on one agent is used by a task on another, downloaded whole and by range,
traced back by lineage; a cached task is skipped until its input changes;
models are registered and promoted; gc frees what nothing refers to; bad
outputs fail clearly."""
import json
import os
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ApiError, ClusterTest  # noqa: E402

HANDOFF = """pipeline: handoff
params:
  text: {type: string, default: hello}
tasks:
  make:
    resources: {labels: {zone: a}}
    run: |
      mkdir -p out/deep && printf '%s\\n' "${{ params.text }}" > out/deep/msg.txt
      head -c 300000 /dev/urandom > blob.bin && cp blob.bin copy.bin
    outputs: [out, "*.bin"]
  use:
    needs: [make]
    resources: {labels: {zone: b}}
    inputs: ["make:out/deep/msg.txt", "make:blob.bin"]
    run: cat out/deep/msg.txt && cmp blob.bin blob.bin && echo agent=$LOOM_AGENT_NAME
"""

CACHED = """pipeline: cached
params:
  n: {type: int, default: 1}
tasks:
  prep:
    cache: true
    run: echo prepared ${{ params.n }} > data.txt
    outputs: [data.txt]
  fit:
    needs: [prep]
    cache: true
    inputs: ["prep:*"]
    run: cat data.txt
"""

MODEL = """pipeline: trainer
params:
  auc: {type: float, default: 0.8}
tasks:
  train:
    run: |
      echo "weights ${{ params.auc }}" > model.bin
      echo '{"auc": ${{ params.auc }}}' > metrics.json
    outputs: [model.bin]
    metrics: metrics.json
    model: {name: churn, path: model.bin, promote: {alias: champion, metric: auc}}
"""


class Artifacts(ClusterTest):
    AGENTS = {}

    def setUp(self):
        super().setUp()
        self.c.start_agent("agent-a", 2, extra=["--label", "zone=a"])
        self.c.start_agent("agent-b", 2, extra=["--label", "zone=b"])
        self.c.wait_agents(["agent-a", "agent-b"])

    def run_and_wait(self, pipeline, **params):
        body = {"params": params} if params else {}
        run_id = self.c.post("/api/v1/pipelines/%s/runs" % pipeline, body)["run"]["id"]
        return self.c.wait_run(run_id)

    def test_output_made_on_one_agent_is_used_on_another(self):
        self.c.submit(HANDOFF)
        run = self.run_and_wait("handoff", text="from agent a")
        self.assertEqual(run["state"], "succeeded", run)
        tasks = self.tasks(run)
        self.assertEqual(tasks["make"]["agent"], "agent-a")
        self.assertEqual(tasks["use"]["agent"], "agent-b")
        self.assertIn(b"from agent a", self.c.log(run["id"], "use"))
        arts = {a["path"]: a for a in
                self.c.get("/api/v1/runs/%d/artifacts?task=make" % run["id"])["artifacts"]}
        self.assertEqual(sorted(arts), ["blob.bin", "copy.bin", "out/deep/msg.txt"])
        self.assertEqual(arts["blob.bin"]["hash"], arts["copy.bin"]["hash"])
        self.assertEqual(arts["blob.bin"]["size"], 300000)
        # The CLI lists and downloads; a range comes back as asked.
        listed = self.c.cli("artifacts", str(run["id"]), check=0).stdout
        self.assertIn("out/deep/msg.txt", listed)
        dest = os.path.join(self.c.tmp, "msg.txt")
        self.c.cli("artifacts", "get", str(run["id"]), "make", "out/deep/msg.txt", "-o", dest,
                   check=0)
        with open(dest) as f:
            self.assertEqual(f.read(), "from agent a\n")
        url = "%s/api/v1/runs/%d/artifacts?task=make&path=blob.bin" % (self.c.url, run["id"])
        whole = urllib.request.urlopen(urllib.request.Request(url, headers=self.c.auth())).read()
        self.assertEqual(len(whole), 300000)
        req = urllib.request.Request(url, headers={"Range": "bytes=100-199", **self.c.auth()})
        with urllib.request.urlopen(req) as r:
            self.assertEqual(r.status, 206)
            self.assertEqual(r.headers["Content-Range"], "bytes 100-199/300000")
            self.assertEqual(r.read(), whole[100:200])
        req = urllib.request.Request(url, headers={"Range": "bytes=400000-", **self.c.auth()})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 416)
        missing = self.c.cli("artifacts", "get", str(run["id"]), "make", "nope.txt", "-o",
                             os.path.join(self.c.tmp, "nope.txt"))
        self.assertEqual(missing.returncode, 1)
        self.assertFalse(os.path.exists(os.path.join(self.c.tmp, "nope.txt")))
        # Lineage: the message came from make, with the run's parameters.
        lin = self.c.cli("lineage", "%d:make:out/deep/msg.txt" % run["id"], check=0).stdout
        self.assertIn("made by run %d task make" % run["id"], lin)
        self.assertIn('"text":"from agent a"', lin)

    def test_cache_skips_until_the_input_changes(self):
        self.c.submit(CACHED)
        first = self.run_and_wait("cached")
        second = self.run_and_wait("cached")
        self.assertEqual(second["state"], "succeeded")
        prep = self.tasks(second)["prep"]
        self.assertEqual(prep["attempts"], 0)
        self.assertIn("cached: the same command and inputs succeeded in run %d" % first["id"],
                      prep["error"])
        # fit's command and input are the same too: cached as well.
        self.assertEqual(self.tasks(second)["fit"]["attempts"], 0)
        changed = self.run_and_wait("cached", n=2)
        self.assertEqual(self.tasks(changed)["prep"]["attempts"], 1)
        # A changed input (prep's new data.txt) runs fit again.
        self.assertEqual(self.tasks(changed)["fit"]["attempts"], 1)
        self.assertIn(b"prepared 2", self.c.log(changed["id"], "fit"))
        out = self.c.cli("run", "cached", "--no-cache", "--wait", check=0).stdout
        self.assertIn("succeeded", out)
        last = self.c.get("/api/v1/runs?pipeline=cached&limit=1")["runs"][0]
        self.assertEqual(self.tasks(self.c.get("/api/v1/runs/%d" % last["id"]))["prep"]
                         ["attempts"], 1)

    def test_models_are_registered_and_promoted_when_better(self):
        self.c.submit(MODEL)
        for auc in (0.8, 0.7, 0.9):
            self.assertEqual(self.run_and_wait("trainer", auc=auc)["state"], "succeeded")
        model = self.c.get("/api/v1/models/churn")
        self.assertEqual([v["version"] for v in model["versions"]], [3, 2, 1])
        self.assertEqual(model["aliases"], {"champion": 3})
        self.assertEqual(model["versions"][1]["metrics"], {"auc": 0.7})
        shown = self.c.cli("models", "show", "churn", check=0).stdout
        self.assertIn("champion", shown)
        self.c.cli("models", "alias", "churn", "champion", "1", check=0)
        self.assertEqual(self.c.get("/api/v1/models/churn")["aliases"], {"champion": 1})
        self.assertEqual(self.c.cli("models", "alias", "churn", "champion", "9").returncode, 1)
        metrics = self.c.cli("metrics", "trainer", "train", check=0).stdout
        self.assertIn("0.7", metrics)
        events = [e["name"] for e in self.c.get("/api/v1/events")["events"]]
        self.assertEqual(events.count("model.registered"), 3)
        self.assertIn("model.alias", events)

    def test_bad_outputs_fail_clearly(self):
        self.c.submit("""pipeline: escape
tasks:
  link:
    run: ln -s /etc/passwd leak.txt
    outputs: [leak.txt]
  nothing:
    run: "true"
    outputs: [never.txt]
""")
        run = self.run_and_wait("escape")
        self.assertEqual(run["state"], "failed")
        tasks = self.tasks(run)
        self.assertIn("link", tasks["link"]["error"])
        self.assertIn("never.txt", tasks["nothing"]["error"])
        self.assertEqual(self.c.get("/api/v1/runs/%d/artifacts" % run["id"])["artifacts"], [])
        with self.assertRaises(ApiError) as e:
            self.c.submit("pipeline: p\ntasks:\n  t: {run: x, outputs: [../up.txt]}\n")
        self.assertEqual(e.exception.status, 422)

    def test_gc_frees_what_nothing_refers_to(self):
        self.c.submit(CACHED)
        for n in range(3):
            self.run_and_wait("cached", n=10 + n)
        dry = json.loads(self.c.cli("--json", "gc", "--keep-last", "1", "--dry-run",
                                    check=0).stdout)
        self.assertEqual(dry["runs_deleted"], 2)
        out = self.c.cli("gc", "--keep-last", "1", check=0).stdout
        self.assertIn("deleted 2 runs", out)
        self.assertEqual(len(self.c.get("/api/v1/runs?pipeline=cached")["runs"]), 1)
        self.assertEqual(self.c.cli("gc").returncode, 2)


if __name__ == "__main__":
    unittest.main()
