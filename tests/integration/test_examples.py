"""Every pipeline in dag-examples/ validates offline, and the ones that can
run on this machine run end to end through loomd and an agent."""
import glob
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import SOURCE, ClusterTest  # noqa: E402

EXAMPLES = sorted(glob.glob(os.path.join(SOURCE, "dag-examples", "*.yaml")))


class Examples(ClusterTest):
    AGENTS = {"local": 2}

    def test_there_are_examples(self):
        self.assertIn("quickstart.yaml", [os.path.basename(p) for p in EXAMPLES])

    def test_every_example_validates_and_runs(self):
        for path in EXAMPLES:
            with self.subTest(example=os.path.basename(path)):
                v = self.c.cli("validate", path, check=0)
                self.assertIn("ok", v.stdout)
                with open(path) as f:
                    sub = self.c.submit(f.read(), os.path.basename(path))
                name = sub["pipeline"]
                # Parameters naming folders point into this test's own folder,
                # so runs leave nothing behind in /tmp.
                declared = self.c.get("/api/v1/pipelines/" + name)["params"]
                params = {p["name"]: os.path.join(self.c.tmp, p["name"]) for p in declared
                          if p["type"] == "string" and str(p["default"]).startswith("/")}
                run_id = self.c.post("/api/v1/pipelines/%s/runs" % name,
                                     {"params": params})["run"]["id"]
                run = self.c.wait_run(run_id)
                self.assertEqual(run["state"], "succeeded",
                                 [(t["name"], t["state"], t["error"]) for t in run["tasks"]])
                for t in run["tasks"]:
                    self.assertTrue(self.c.log(run["id"], t["name"]), t["name"])


if __name__ == "__main__":
    unittest.main()
