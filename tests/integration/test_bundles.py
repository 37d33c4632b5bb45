"""Pipelines as code: `loom submit` bundles the DAG's folder, loomd stores
each content once, and the agent unpacks the bundle into the task's working
folder, fetching only what it has not cached."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ApiError, ClusterTest  # noqa: E402

DAG = """pipeline: bundled
tasks:
  show:
    run: sh ./script.sh
"""

SCRIPT = """echo "data: $(cat data/input.txt)"
test -e big.bin && echo "big.bin is here" || echo "big.bin left out"
test -x tools/run.sh && echo "tools/run.sh is executable"
"""


def blake(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def manifest(files):
    """The canonical manifest bytes of [(path, mode, content)]."""
    entries = ",".join(
        '{"path":%s,"mode":%d,"size":%d,"hash":"%s"}' % (json.dumps(p), m, len(c), blake(c))
        for p, m, c in sorted(files))
    return ('{"version":1,"files":[%s]}' % entries).encode()


class Bundles(ClusterTest):
    AGENTS = {"bundler": 2}

    def setUp(self):
        super().setUp()
        self.proj = os.path.join(self.c.tmp, "proj")
        os.makedirs(self.proj)

    def write(self, rel, data, mode=0o644):
        path = os.path.join(self.proj, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, mode)
        return path

    def put_object(self, data):
        h = blake(data)
        self.c.request("PUT", "/api/v1/objects/" + h, data)
        return h

    def run_log(self, pipeline, task):
        run = self.c.wait_run(self.c.start_run(pipeline))
        t = self.tasks(run)[task]
        self.assertEqual(run["state"], "succeeded", (t["state"], t["error"]))
        return self.c.log(run["id"], task).decode()

    def make_project(self):
        dag = self.write("dag.yaml", DAG)
        self.write("script.sh", SCRIPT)
        self.write("data/input.txt", "first")
        self.write("tools/run.sh", "#!/bin/sh\n", 0o755)
        self.write(".loomignore", "# not code\nbig.bin\n")
        self.write("big.bin", os.urandom(3 << 20))
        return dag

    def test_submit_run_resubmit_and_change_one_file(self):
        dag = self.make_project()
        out = self.c.cli("submit", dag, check=0).stdout
        self.assertRegex(out, r"^submitted bundled version 1 \(1 task, bundle 5 files, "
                              r"5 uploaded, [0-9.]+ (B|KiB)\)$")
        log = self.run_log("bundled", "show")
        self.assertIn("data: first\n", log)
        self.assertIn("big.bin left out\n", log)
        self.assertIn("tools/run.sh is executable\n", log)

        out = self.c.cli("submit", dag, check=0).stdout
        self.assertRegex(out, r"^bundled is unchanged \(version 1, bundle 5 files, 0 uploaded")

        self.write("data/input.txt", "second")
        out = self.c.cli("submit", dag, check=0).stdout
        self.assertRegex(out, r"^submitted bundled version 2 \(1 task, bundle 5 files, 1 uploaded, "
                              r"6 B\)$")
        self.assertIn("data: second\n", self.run_log("bundled", "show"))
        # The old version keeps its own bundle.
        info = self.c.get("/api/v1/pipelines/bundled")
        v1, v2 = info["versions"]
        self.assertNotEqual(v1["bundle"], v2["bundle"])
        run = self.c.post("/api/v1/pipelines/bundled/runs", {"version": 1})["run"]
        run = self.c.wait_run(run["id"])
        self.assertIn("data: first\n", self.c.log(run["id"], "show").decode())

        # Nothing ignored reached the agent, and its cache holds each content once.
        work = os.path.join(self.c.tmp, "agent-bundler")
        for root, _, files in os.walk(os.path.join(work, "attempts")):
            self.assertNotIn("big.bin", files, root)
        cached = [f for _, _, fs in os.walk(os.path.join(work, "cache", "objects")) for f in fs]
        self.assertEqual(len(cached), len(set(cached)))
        with open(os.path.join(self.proj, "big.bin"), "rb") as f:
            self.assertNotIn(blake(f.read())[2:], cached)

    def test_git_origin_is_recorded(self):
        if not shutil.which("git"):
            self.skipTest("no git")
        dag = self.make_project()
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")

        def git(*args):
            return subprocess.run(["git", "-C", self.proj] + list(args), check=True, env=env,
                                  capture_output=True, text=True).stdout.strip()
        git("init", "-q")
        git("add", "-A")
        git("commit", "-q", "-m", "pipeline")
        head = git("rev-parse", "HEAD")
        self.c.cli("submit", dag, check=0)
        self.write("data/input.txt", "uncommitted")
        self.c.cli("submit", dag, check=0)
        v1, v2 = self.c.get("/api/v1/pipelines/bundled")["versions"]
        self.assertEqual(v1["git"], {"commit": head, "dirty": False})
        self.assertEqual(v2["git"], {"commit": head, "dirty": True})

    def test_no_bundle_and_refusals(self):
        dag = self.write("dag.yaml", "pipeline: bare\ntasks:\n  t:\n"
                                     "    run: test -e file.txt || echo not bundled\n")
        self.write("file.txt", "x")
        out = self.c.cli("submit", "--no-bundle", dag, check=0).stdout
        self.assertEqual(out, "submitted bare version 1 (1 task)\n")
        self.assertEqual(self.run_log("bare", "t"), "not bundled\n")

        # Too many files for a bundle: refused before anything is sent.
        for i in range(10001):
            with open(os.path.join(self.proj, "n%05d" % i), "w"):
                pass
        p = self.c.cli("submit", dag, check=1)
        self.assertIn("more than 10000 files", p.stderr)
        self.assertIn(".loomignore", p.stderr)

    def test_hostile_and_incomplete_bundles_are_refused(self):
        dag_src = "pipeline: evil\ntasks:\n  t:\n    run: ls\n"
        payload = self.put_object(b"owned\n")
        evil = ('{"version":1,"files":[{"path":"../evil","mode":493,"size":6,"hash":"%s"}]}'
                % payload).encode()
        evil_hash = self.put_object(evil)
        with self.assertRaises(ApiError) as e:
            self.c.post("/api/v1/pipelines", {"file": "evil.yaml", "source": dag_src,
                                              "bundle": evil_hash})
        self.assertEqual(e.exception.status, 422)
        self.assertIn("../evil", e.exception.body)

        missing = manifest([("a.py", 0o644, b"never uploaded")])
        with self.assertRaises(ApiError) as e:
            self.c.post("/api/v1/pipelines", {"file": "evil.yaml", "source": dag_src,
                                              "bundle": self.put_object(missing)})
        self.assertEqual(e.exception.status, 422)
        self.assertIn("incomplete code bundle", e.exception.body)
        self.assertIn("a.py", e.exception.body)

        # An upload whose content is not its name is refused and not stored.
        wrong = blake(b"one thing")
        with self.assertRaises(ApiError) as e:
            self.c.request("PUT", "/api/v1/objects/" + wrong, b"another")
        self.assertEqual(e.exception.status, 422)
        missing = self.c.post("/api/v1/objects/missing", {"hashes": [wrong, payload]})
        self.assertEqual(missing["missing"], [wrong])
        self.assertFalse(any(f == "evil" for _, _, fs in os.walk(self.c.tmp) for f in fs))

    def test_bundle_shared_by_tasks_and_pipelines(self):
        self.write("dag.yaml", "pipeline: one\ntasks:\n" + "".join(
            "  t%d:\n    run: cat lib/common.txt\n" % i for i in range(4)))
        self.write("lib/common.txt", "shared\n")
        other = os.path.join(self.c.tmp, "other")
        os.makedirs(os.path.join(other, "lib"))
        with open(os.path.join(other, "lib", "common.txt"), "w") as f:
            f.write("shared\n")
        with open(os.path.join(other, "dag.yaml"), "w") as f:
            f.write("pipeline: two\ntasks:\n  t:\n    run: cat lib/common.txt\n")
        self.c.cli("submit", os.path.join(self.proj, "dag.yaml"), check=0)
        out = self.c.cli("submit", os.path.join(other, "dag.yaml"), check=0).stdout
        # Only the DAG file differs; lib/common.txt is already stored.
        self.assertIn("bundle 2 files, 1 uploaded", out)
        run = self.c.wait_run(self.c.start_run("one"))
        self.assertEqual(run["state"], "succeeded")
        for t in run["tasks"]:
            self.assertEqual(self.c.log(run["id"], t["name"]), b"shared\n")
        self.assertIn("shared\n", self.run_log("two", "t"))
        with open(os.path.join(self.c.tmp, "agent-bundler.log"), errors="replace") as f:
            log = f.read()
        # Each object fetched once however many tasks and pipelines used it:
        # two manifests, two DAG files, one lib/common.txt.
        fetched = re.findall(r"object cached hash=([0-9a-f]{64})", log)
        self.assertEqual(len(fetched), 5, fetched)
        self.assertEqual(len(set(fetched)), 5, fetched)


if __name__ == "__main__":
    unittest.main()
