#!/usr/bin/env python3
"""Makes the screenshots in docs/ui/*.png: starts loomd and two agents (with
tests/integration/loomtest.py), fills them with a few runs of a small
training pipeline -- finished, failed and live -- then runs screenshots.mjs,
which signs in with headless Chromium and saves each main page.

    python3 tests/browser/screenshots.py     # after building (build/debug)
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from loomtest import Cluster, wait_for  # noqa: E402

DAG = """pipeline: churn
description: Train a churn model and register it when it is good enough.
params:
  fail: "no"
  gate: /nonexistent
triggers:
  - schedule: "0 3 * * *"
tasks:
  extract:
    run: "echo extracting; seq 1 1000 > rows.csv"
    outputs: [rows.csv]
  validate:
    needs: extract
    run: "[ '${{ params.fail }}' = yes ] && { echo 'validate: 3 empty fields' >&2; exit 1; }; echo ok"
  profile:
    needs: extract
    run: "echo profiling"
  features:
    needs: [validate, profile]
    run: "echo building features"
  train:
    needs: features
    run: |
      for e in 1 2 3 4 5; do echo "epoch $e/5 loss=0.$((90 / e))"; done
      while [ ! -e ${{ params.gate }} ]; do sleep 0.1; done
      echo '{"auc": 0.93, "loss": 0.18}' > metrics.json; printf model > model.bin
    outputs: [model.bin]
    metrics: metrics.json
    model: {name: churn, path: model.bin}
  evaluate:
    needs: train
    run: "echo evaluating"
  explain:
    needs: train
    run: "echo explaining"
  register:
    needs: [evaluate, explain]
    run: "echo registered"
  report:
    needs: [register, profile]
    run: "echo report"
"""


def main():
    c = Cluster(log_level="info")
    try:
        c.start_loomd()
        c.start_agent("gpu-01", 4, extra=["--no-gpu-detect", "--gpu", "0:NVIDIA A100-SXM4-40GB:40G",
                                          "--gpu", "1:NVIDIA A100-SXM4-40GB:40G"])
        c.start_agent("cpu-01", 4)
        c.wait_agents(["gpu-01", "cpu-01"])
        gate = tempfile.mkdtemp(dir=c.tmp)
        c.submit(DAG)
        done = os.path.join(gate, "open")
        open(done, "w").close()
        for fail in ("no", "yes", "no", "no"):
            rid = c.post("/api/v1/pipelines/churn/runs",
                         {"params": {"fail": fail, "gate": done}})["run"]["id"]
            c.wait_run(rid)
        live = c.post("/api/v1/pipelines/churn/runs",
                      {"params": {"gate": os.path.join(gate, "never")}})["run"]["id"]
        wait_for(lambda: any(t["name"] == "train" and t["state"] == "running"
                             for t in c.get("/api/v1/runs/%d" % live)["tasks"]), "train to run")
        c.post("/api/v1/events/data.arrived", {"path": "s3://bucket/day-42.parquet"})
        scenario = {"url": c.url, "token": c.token, "run": live, "done_run": live - 1,
                    "out": os.path.join(HERE, "..", "..", "docs", "ui"),
                    "chromium": os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium")}
        subprocess.run(["node", os.path.join(HERE, "screenshots.mjs")], input=json.dumps(scenario),
                       text=True, check=True)
        c.post("/api/v1/runs/%d/cancel" % live)
    finally:
        c.close()


if __name__ == "__main__":
    main()
