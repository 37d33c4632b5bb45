"""The DAG format at run time: parameters without injection, conditions on
metrics, trigger rules, foreach fan-out, retry backoff, metrics."""
import json
import os
import sys
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ApiError, ClusterTest  # noqa: E402


class DagFormat(ClusterTest):
    AGENTS = {"f1": 4}

    def run_pipeline(self, src, params=None, expect="succeeded"):
        name = self.c.submit(textwrap.dedent(src))["pipeline"]
        body = {"params": params} if params else {}
        run_id = self.c.post("/api/v1/pipelines/%s/runs" % name, body)["run"]["id"]
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], expect,
                         [(t["name"], t["state"], t["error"]) for t in run["tasks"]])
        return run

    def start_error(self, pipeline, params):
        with self.assertRaises(ApiError) as cm:
            self.c.post("/api/v1/pipelines/%s/runs" % pipeline, {"params": params})
        self.assertEqual(cm.exception.status, 400)
        return json.loads(cm.exception.body)["error"]

    def test_parameters_are_typed_and_never_interpreted(self):
        pwned = os.path.join(self.c.tmp, "pwned")
        hostile = "$(touch %s); `touch %s` ; rm -rf ~ 'quoted' \"double\"\nnewline" % (
            pwned, pwned)
        run = self.run_pipeline("""\
            pipeline: params
            params:
              msg: {type: string, default: hello}
              epochs: {type: int, default: 3}
              lr: 0.5
              flags: {type: list, default: [a, b]}
            tasks:
              shell:
                run: printf '%s|' ${{ params.msg }} ${{ params.epochs }}
              argv:
                run: [printf, "%s|", "x${{ params.msg }}y", "${{ params.lr }}"]
              env:
                run: printf '%s|%s|%s' "$LOOM_PARAM_MSG" "$LOOM_PARAM_FLAGS" "$(cat "$LOOM_PARAMS_FILE")"
            """, {"msg": hostile, "lr": "0.25"})
        rid = run["id"]
        self.assertEqual(run["params"], {"msg": hostile, "epochs": 3, "lr": 0.25,
                                         "flags": ["a", "b"]})
        self.assertEqual(self.c.log(rid, "shell").decode(), hostile + "|3|")
        self.assertEqual(self.c.log(rid, "argv").decode(), "x%sy|0.25|" % hostile)
        msg, flags, file = self.c.log(rid, "env").decode().split("|", 2)
        self.assertEqual((msg, flags), (hostile, '["a","b"]'))
        self.assertEqual(json.loads(file)["msg"], hostile)
        self.assertFalse(os.path.exists(pwned))
        self.assertIn("must be an int", self.start_error("params", {"epochs": "many"}))
        self.assertIn('unknown parameter "epoch"', self.start_error("params", {"epoch": 1}))

    def test_required_parameter(self):
        self.c.submit("pipeline: req\nparams:\n  model: {type: string}\n"
                      "tasks:\n  t:\n    run: echo ${{ params.model }}\n")
        self.assertIn('"model" is required', self.start_error("req", {}))

    def test_quality_gate_on_metrics(self):
        src = """\
            pipeline: gate
            params:
              min_auc: 0.8
            tasks:
              evaluate:
                run: |
                  echo '{"auc": 0.83, "loss": 0.2}' > metrics.json
                metrics: metrics.json
              register:
                needs: [evaluate]
                if: tasks.evaluate.metrics.auc >= params.min_auc
                run: echo registered ${{ tasks.evaluate.metrics.auc }}
              announce:
                needs: [register]
                run: echo announced
            """
        run = self.run_pipeline(src)
        t = self.tasks(run)
        self.assertEqual(t["evaluate"]["metrics"], {"auc": 0.83, "loss": 0.2})
        self.assertEqual(self.c.log(run["id"], "register"), b"registered 0.83\n")
        self.assertEqual(t["announce"]["state"], "succeeded")

        run = self.run_pipeline(src, {"min_auc": 0.9})
        t = self.tasks(run)
        self.assertEqual(t["register"]["state"], "skipped")
        self.assertIn("tasks.evaluate.metrics.auc >= params.min_auc", t["register"]["error"])
        self.assertIn("tasks.evaluate.metrics.auc=0.83", t["register"]["error"])
        self.assertIn("params.min_auc=0.9", t["register"]["error"])
        self.assertEqual((t["announce"]["state"], t["announce"]["attempts"]), ("skipped", 0))

    def test_missing_metrics_file_fails_the_task(self):
        run = self.run_pipeline("""\
            pipeline: nometrics
            tasks:
              t:
                run: "true"
                metrics: metrics.json
            """, expect="failed")
        self.assertIn("metrics", self.tasks(run)["t"]["error"])

    def test_trigger_rules_for_cleanup_and_alerts(self):
        run = self.run_pipeline("""\
            pipeline: rules
            tasks:
              train:
                run: exit 2
              cleanup:
                needs: [train]
                trigger_rule: all_done
                run: echo cleaned
              alert:
                needs: [train]
                trigger_rule: one_failed
                run: echo alerted
              publish:
                needs: [train]
                run: echo never
            """, expect="failed")
        t = self.tasks(run)
        self.assertEqual([t[n]["state"] for n in ("train", "cleanup", "alert", "publish")],
                         ["failed", "succeeded", "succeeded", "upstream_failed"])
        run = self.run_pipeline("""\
            pipeline: rules-ok
            tasks:
              train:
                run: "true"
              alert:
                needs: [train]
                trigger_rule: one_failed
                run: echo alerted
            """)
        self.assertEqual(self.tasks(run)["alert"]["state"], "skipped")

    def test_foreach_fans_out_and_fans_in(self):
        trace = os.path.join(self.c.tmp, "sweep.trace")
        run = self.run_pipeline("""\
            pipeline: sweep
            params:
              lrs: [0.1, 0.01, 0.001]
            tasks:
              train:
                foreach: params.lrs
                run: echo "lr=${{ item }} index=$LOOM_ITEM_INDEX" | tee -a %s
              pick:
                needs: [train]
                run: wc -l < %s
            """ % (trace, trace))
        names = [t["name"] for t in run["tasks"]]
        self.assertEqual(names, ["train[0]", "train[1]", "train[2]", "pick"])
        self.assertEqual(self.tasks(run)["train[1]"]["item"], 0.01)
        self.assertEqual(self.c.log(run["id"], "train%5B2%5D"), b"lr=0.001 index=2\n")
        self.assertEqual(self.c.log(run["id"], "pick").strip(), b"3")
        run = self.run_pipeline("""\
            pipeline: sweep-empty
            params:
              lrs: {type: list, default: []}
            tasks:
              train:
                foreach: params.lrs
                run: echo ${{ item }}
              after:
                needs: [train]
                trigger_rule: all_done
                run: echo done
            """)
        t = self.tasks(run)
        self.assertEqual((t["train"]["state"], t["after"]["state"]), ("skipped", "succeeded"))

    def test_retry_backoff_waits_between_attempts(self):
        marker = os.path.join(self.c.tmp, "flaky")
        run = self.run_pipeline("""\
            pipeline: backoff
            tasks:
              t:
                retries: 2
                retry_delay: 300ms
                retry_jitter: false
                run: if [ -e %s ]; then echo ok; else touch %s; exit 1; fi
            """ % (marker, marker))
        attempts = self.c.get("/api/v1/runs/%d/tasks/t/attempts" % run["id"])["attempts"]
        self.assertEqual([a["state"] for a in attempts], ["failed", "succeeded"])
        gap = attempts[1]["dispatched_unix_ms"] - attempts[0]["ended_unix_ms"]
        self.assertGreaterEqual(gap, 290)

    def test_versions_history_and_show(self):
        base = "pipeline: hist\ntasks:\n  t:\n    run: echo %d\n"
        for i in (1, 2):
            self.c.submit(base % i)
        out = self.c.cli("pipelines", "history", "hist", check=0).stdout
        self.assertRegex(out, r"(?m)^\s+1\s+1\s")
        self.assertRegex(out, r"(?m)^\s+2\s+1\s")
        shown = self.c.cli("pipelines", "show", "hist", "--version", "1", check=0).stdout
        self.assertIn("echo 1", shown)
        self.assertNotIn("echo 2", shown)
        run = self.c.cli("run", "hist", "--version", "1", "--logs", check=0).stdout
        self.assertIn("\n1\n", run)


if __name__ == "__main__":
    unittest.main()
