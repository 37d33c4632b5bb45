"""Triggers end to end through real loomd and agent processes: events over
HTTP (ours and Alertmanager's) with idempotency, S3 notifications and a
watched folder as data arrivals, what a task sees of its trigger, the
decision log, pausing, and the CLI a monitoring hook uses."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import ApiError, ClusterTest, wait_for  # noqa: E402

RETRAIN = """pipeline: retrain
params:
  min_psi: {type: float, default: 0.2}
triggers:
  - event: drift
    when: event.psi > params.min_psi
tasks:
  train:
    run: |
      echo "model=$LOOM_EVENT_MODEL psi=$LOOM_EVENT_PSI trigger=$LOOM_TRIGGER id=$LOOM_TRIGGER_EVENT_ID"
      cat "$LOOM_TRIGGER_FILE"
"""

ALERTS = """pipeline: on-alert
triggers:
  - event: ModelDrift
    when: event.severity == 'page'
tasks:
  react: {run: 'echo alert $LOOM_EVENT_MODEL $LOOM_EVENT_SUMMARY'}
"""

S3 = """pipeline: from-bucket
triggers:
  - data: {path: "s3://landing/daily", glob: "*.parquet"}
tasks:
  load: {run: 'cat "$LOOM_DATA_FILES"'}
"""


def alert(status="firing", severity="page", fp="abc123", starts="2026-11-27T10:00:00Z"):
    return {"version": "4", "status": status, "receiver": "loom", "groupKey": "{}:{}",
            "alerts": [{"status": status,
                        "labels": {"alertname": "ModelDrift", "model": "churn",
                                   "severity": severity},
                        "annotations": {"summary": "psi-high"},
                        "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": fp}]}


class Triggers(ClusterTest):
    AGENTS = {"t1": 2}

    def runs(self, pipeline):
        return self.c.get("/api/v1/runs?pipeline=" + pipeline)["runs"]

    def wait_runs(self, pipeline, n):
        return wait_for(lambda: len(self.runs(pipeline)) >= n and self.runs(pipeline),
                        "%d runs of %s" % (n, pipeline))

    def test_event_starts_a_run_that_sees_the_event(self):
        self.c.submit(RETRAIN)
        low = self.c.post("/api/v1/events/drift", {"psi": 0.1, "model": "churn"})
        self.assertEqual(low["outcome"][0]["decision"], "filtered")
        self.assertIn("event.psi=0.1", low["outcome"][0]["reason"])
        res = self.c.post("/api/v1/events/drift", {"psi": 0.31, "model": "churn"},
                          headers={"Idempotency-Key": "check-42"})
        self.assertFalse(res["duplicate"])
        run_id = res["outcome"][0]["run_id"]
        run = self.c.wait_run(run_id)
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(run["origin"]["kind"], "event")
        self.assertEqual(run["origin"]["event_id"], res["event_id"])
        log = self.c.log(run_id, "train").decode()
        self.assertIn("model=churn psi=0.31 trigger=event id=%d" % res["event_id"], log)
        self.assertIn('"event":{"model":"churn","psi":0.31}', log)
        # Event data never reaches a command line through ${{ }}.
        bad = RETRAIN.replace("$LOOM_EVENT_PSI", "${{ event.psi }}").replace("retrain", "bad")
        with self.assertRaises(ApiError) as e:
            self.c.submit(bad)
        self.assertEqual(e.exception.status, 422)
        # The monitor retries its delivery: nothing new starts.
        again = self.c.request("POST", "/api/v1/events/drift", {"psi": 0.31, "model": "churn"},
                               headers={"Idempotency-Key": "check-42"})
        self.assertTrue(again["duplicate"])
        self.assertEqual(again["event_id"], res["event_id"])
        self.assertEqual(len(self.runs("retrain")), 1)
        events = self.c.get("/api/v1/events?name=drift")["events"]
        self.assertEqual([e["outcome"][0]["decision"] for e in events], ["started", "filtered"])

    def test_alertmanager_alerts_become_events_once(self):
        self.c.submit(ALERTS)
        out = self.c.post("/api/v1/hooks/alertmanager", alert())
        self.assertEqual(out["events"][0]["name"], "ModelDrift")
        run_id = out["events"][0]["outcome"][0]["run_id"]
        self.assertEqual(self.c.wait_run(run_id)["state"], "succeeded")
        self.assertIn(b"alert churn psi-high", self.c.log(run_id, "react"))
        # Alertmanager re-sends a firing alert every repeat_interval.
        again = self.c.post("/api/v1/hooks/alertmanager", alert())
        self.assertTrue(again["events"][0]["duplicate"])
        resolved = self.c.post("/api/v1/hooks/alertmanager", alert(status="resolved"))
        self.assertEqual(resolved["events"][0]["ignored"], "not firing")
        warn = self.c.post("/api/v1/hooks/alertmanager", alert(severity="warn", fp="other"))
        self.assertEqual(warn["events"][0]["outcome"][0]["decision"], "filtered")
        self.assertEqual(len(self.runs("on-alert")), 1)

    def test_bad_deliveries_are_refused_and_change_nothing(self):
        self.c.submit(RETRAIN)
        cases = [
            ("/api/v1/events/bad%20name", b"{}", "invalid event name"),
            ("/api/v1/events/drift", b"[1, 2]", "must be a JSON object"),
            ("/api/v1/events/drift", b"{\"psi\": ", "request body"),
            ("/api/v1/hooks/alertmanager", b"{\"version\": \"3\", \"alerts\": []}",
             "version"),
            ("/api/v1/hooks/s3", b"{\"records\": []}", "Records"),
        ]
        for path, body, why in cases:
            with self.assertRaises(ApiError) as e:
                self.c.request("POST", path, body)
            self.assertEqual(e.exception.status, 400, path)
            self.assertIn(why, e.exception.body)
        self.assertEqual(self.c.get("/api/v1/events")["events"], [])
        self.assertEqual(self.runs("retrain"), [])

    def test_s3_notifications_are_data_arrivals(self):
        self.c.submit(S3)
        rec = {"eventName": "ObjectCreated:Put",
               "s3": {"bucket": {"name": "landing"},
                      "object": {"key": "daily/2026-11-27+part%3D1.parquet", "size": 1024,
                                 "eTag": "e1", "sequencer": "0001"}}}
        other = json.loads(json.dumps(rec))
        other["s3"]["object"]["key"] = "weekly/x.parquet"
        out = self.c.post("/api/v1/hooks/s3", {"Records": [rec, other]})
        self.assertEqual(out["records"][0]["matched"][0]["pipeline"], "from-bucket")
        self.assertEqual(out["records"][1]["matched"], [])
        runs = self.wait_runs("from-bucket", 1)
        run = self.c.wait_run(runs[0]["id"])
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.c.log(run["id"], "load"),
                         b"s3://landing/daily/2026-11-27 part=1.parquet\n")
        # The same object version again: no new run.
        self.c.post("/api/v1/hooks/s3", {"Records": [rec]})
        self.assertEqual(len(self.runs("from-bucket")), 1)

    def test_watched_folder_and_the_cli(self):
        incoming = os.path.join(self.c.tmp, "incoming")
        os.makedirs(incoming)
        dag = ("pipeline: ingest\n"
               "concurrency: {max_active_runs: 1, on_overlap: queue}\n"
               "triggers:\n"
               "  - data: {path: %s, glob: '*.csv', settle: 0s}\n"
               "tasks:\n"
               "  load: {run: 'wc -l < \"$LOOM_DATA_FILES\"; cat \"$LOOM_DATA_FILES\"'}\n"
               % incoming)
        path = os.path.join(self.c.tmp, "ingest.yaml")
        with open(path, "w") as f:
            f.write(dag)
        self.c.cli("submit", "--no-bundle", path, check=0)
        # Written elsewhere, then renamed in: one arrival, complete.
        tmp = os.path.join(incoming, ".day1.csv")
        with open(tmp, "w") as f:
            f.write("a,b\n1,2\n")
        os.rename(tmp, os.path.join(incoming, "day1.csv"))
        runs = self.wait_runs("ingest", 1)
        run = self.c.wait_run(runs[0]["id"])
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.c.log(run["id"], "load").decode(),
                         "1\n%s/day1.csv\n" % incoming)
        out = self.c.cli("triggers", check=0).stdout
        self.assertIn("ingest", out)
        self.assertIn("data", out)
        explain = self.c.cli("triggers", "--explain", "ingest", check=0).stdout
        self.assertIn("started", explain)
        self.assertIn("day1.csv", explain)
        # Paused: files wait, and start their run on resume.
        self.assertIn("paused", self.c.cli("pause", "ingest", check=0).stdout)
        with open(os.path.join(incoming, "day2.csv"), "w") as f:
            f.write("x\n")
        wait_for(lambda: any(t.get("waiting_files") == 1
                             for t in self.c.get("/api/v1/triggers")["triggers"]),
                 "the file to wait while paused")
        self.assertEqual(len(self.runs("ingest")), 1)
        self.c.cli("resume", "ingest", check=0)
        self.wait_runs("ingest", 2)
        self.assertEqual(self.c.cli("pause", "nope").returncode, 1)

    def test_events_send_from_the_cli(self):
        self.c.submit(RETRAIN)
        p = self.c.cli("events", "send", "drift", "-d", '{"psi": 0.5, "model": "m"}',
                       "--key", "k1", check=0)
        self.assertIn("retrain: started run", p.stdout)
        run_id = self.runs("retrain")[0]["id"]
        status = self.c.cli("status", str(run_id), check=0).stdout
        self.assertIn("started by event drift #", status)
        p = self.c.cli("events", "send", "drift", "-d", '{"psi": 0.5, "model": "m"}',
                       "--key", "k1", check=0)
        self.assertIn("a repeat", p.stdout)
        bad = self.c.cli("events", "send", "drift", "-d", "{nope")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("line 1", bad.stderr)
        listed = self.c.cli("events", check=0).stdout
        self.assertIn("drift", listed)
        self.assertIn("retrain: started run", listed)

    def test_drift_check_emits_an_event_that_retrains(self):
        self.c.submit("pipeline: retrain-on-drift\n"
                      "triggers: [{event: churn-drift, when: event.drift}]\n"
                      "tasks: {train: {run: 'echo share=$LOOM_EVENT_SHARE'}}\n")
        ref = os.path.join(self.c.tmp, "ref.csv")
        cur = os.path.join(self.c.tmp, "cur.csv")
        with open(ref, "w") as f:
            f.write("x,c\n" + "".join("%d,%s\n" % (i % 50, "ab"[i % 2]) for i in range(400)))
        with open(cur, "w") as f:
            f.write("x,c\n" + "".join("%d,%s\n" % (i % 50 + 40, "a") for i in range(400)))
        same = self.c.cli("drift", ref, ref, "--emit", "churn-drift", check=0)
        self.assertIn("sent as event churn-drift", same.stderr)
        drifted = self.c.cli("drift", cur and ref, cur, "--emit", "churn-drift", check=1)
        self.assertIn("1 pipeline listening", drifted.stderr)
        runs = self.wait_runs("retrain-on-drift", 1)
        self.assertEqual(len(runs), 1)
        run = self.c.wait_run(runs[0]["id"])
        self.assertEqual(run["state"], "succeeded")
        self.assertEqual(self.c.log(run["id"], "train"), b"share=1.0\n")
        decisions = [e["outcome"][0]["decision"]
                     for e in self.c.get("/api/v1/events?name=churn-drift")["events"]]
        self.assertEqual(decisions, ["started", "filtered"])


if __name__ == "__main__":
    unittest.main()
