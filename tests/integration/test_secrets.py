"""Secrets and signed webhooks end to end through real loomd and agent
processes: secrets stored encrypted (never in loom.db, its WAL, logs or
listings), given to exactly the tasks that list them as variables and as
files that are gone after the attempt, masked in the task's log (also when
a value is split across reads), a missing secret failing the attempt
clearly, a wrong key file refused; and webhook deliveries checked against
the hook's secret (X-Loom-Signature with and without a timestamp, GitHub's
X-Hub-Signature-256), with replays starting nothing."""
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOMD, ApiError, Cluster, ClusterTest, wait_for  # noqa: E402

TOKEN = "tok-7f3a9c2e51d84b6aa0c9e1f2"
DBPASS = "pw-Zq8#x!LmN4vR2sT6"

USES = """pipeline: uses
tasks:
  reader:
    secrets:
      - API_TOKEN
      - {name: DB_PASS, file: creds/db.txt, env: DB_PASS_FILE}
      - {name: API_TOKEN, env: SECOND_NAME}
    run: |
      # The DAG never holds a value: compare digests.
      [ "$(printf %%s "$API_TOKEN" | sha256sum)" = "%(tok)s  -" ] && echo env-ok
      [ "$(printf %%s "$SECOND_NAME" | sha256sum)" = "%(tok)s  -" ] && echo second-ok
      [ "$(sha256sum < creds/db.txt)" = "%(pw)s  -" ] && echo file-ok
      echo "file=$DB_PASS_FILE mode=$(stat -c %%a "$DB_PASS_FILE")"
      echo "token is $API_TOKEN and password is $(cat "$DB_PASS_FILE")"
      echo "token on stderr $API_TOKEN" >&2
      python3 -c '
      import os, sys, time
      t = os.environ["API_TOKEN"]
      sys.stdout.write("split:" + t[:9]); sys.stdout.flush(); time.sleep(0.3)
      sys.stdout.write(t[9:] + ":end\\n"); sys.stdout.flush()
      sys.stdout.write(("x" * 997 + t + "\\n") * 3000); sys.stdout.flush()
      '
  bystander:
    run: |
      echo "token=${API_TOKEN:-unset} pass=${DB_PASS:-unset}"
      ls creds 2>/dev/null || echo no-creds
  kept:
    secrets: [{name: DB_PASS, file: db.txt}]
    run: |
      echo left > other.txt
      echo "dir=$PWD"
      exit 3
""" % {"tok": hashlib.sha256(TOKEN.encode()).hexdigest(),
       "pw": hashlib.sha256(DBPASS.encode()).hexdigest()}

MISSING = """pipeline: missing
tasks:
  needs-it:
    secrets: [NOPE]
    retries: 2
    run: echo should not run
"""


def files_under(root):
    for d, _, files in os.walk(root):
        for f in files:
            yield os.path.join(d, f)


class Secrets(ClusterTest):
    AGENTS = {"s1": 4}

    def set_secret(self, name, value):
        p = self.c.cli("secrets", "set", name, input=value + "\n", check=0)
        self.assertIn("stored secret " + name, p.stdout)
        self.assertNotIn(value, p.stdout + p.stderr)

    def test_tasks_get_their_secrets_masked_and_never_stored_in_plaintext(self):
        self.set_secret("API_TOKEN", TOKEN)
        self.set_secret("DB_PASS", DBPASS)
        self.c.submit(USES)
        run = self.c.wait_run(self.c.start_run("uses"))
        tasks = self.tasks(run)
        self.assertEqual(tasks["reader"]["state"], "succeeded", tasks["reader"])
        self.assertEqual(tasks["bystander"]["state"], "succeeded")

        log = self.c.log(run["id"], "reader").decode()
        for want in ("env-ok", "second-ok", "file-ok", "mode=600", "split:***:end",
                     "token is *** and password is ***", "token on stderr ***"):
            self.assertIn(want, log)
        self.assertEqual(log.count("x" * 997 + "***\n"), 3000)
        self.assertNotIn(TOKEN, log)
        self.assertNotIn(DBPASS, log)
        # The same through the CLI.
        p = self.c.cli("logs", str(run["id"]), "reader", check=0)
        self.assertNotIn(TOKEN, p.stdout)
        self.assertIn("split:***:end", p.stdout)

        # A task that did not list them sees neither.
        other = self.c.log(run["id"], "bystander").decode()
        self.assertIn("token=unset pass=unset", other)
        self.assertIn("no-creds", other)

        # The file is gone after the attempt, also from a folder kept for a look.
        self.assertEqual(tasks["kept"]["state"], "failed")
        kept = self.c.log(run["id"], "kept").decode()
        folder = kept.split("dir=")[1].split()[0]
        self.assertTrue(os.path.exists(os.path.join(folder, "other.txt")))
        self.assertFalse(os.path.exists(os.path.join(folder, "db.txt")))
        fpath = log.split("file=")[1].split()[0]
        self.assertFalse(os.path.exists(fpath))

        # Listings name secrets, never values.
        lst = self.c.cli("secrets", "list", check=0)
        self.assertIn("API_TOKEN", lst.stdout)
        self.assertIn("uses/reader", lst.stdout)
        self.assertNotIn(TOKEN, lst.stdout)
        raw = self.c.get("/api/v1/secrets", raw=True).decode()
        self.assertNotIn(TOKEN, raw)
        self.assertNotIn(DBPASS, raw)
        for path in ("/api/v1/runs/%d" % run["id"],
                     "/api/v1/runs/%d/tasks/reader/attempts" % run["id"]):
            self.assertNotIn(TOKEN, self.c.get(path, raw=True).decode())
        st = self.c.cli("status", str(run["id"]), check=0)
        self.assertNotIn(TOKEN, st.stdout)

        # Nothing on disk holds a value: not loom.db, its WAL, the logs, the
        # daemons' own logs, the agent's folders.
        for f in files_under(self.c.tmp):
            if os.path.basename(f) == "secrets.key":
                continue
            with open(f, "rb") as fh:
                data = fh.read()
            for v in (TOKEN, DBPASS):
                self.assertFalse(v.encode() in data, "%s holds a secret" % f)
        key = os.path.join(self.c.state, "secrets.key")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertEqual(os.path.getsize(key), 32)

    def test_a_missing_secret_fails_the_attempt_clearly(self):
        self.c.submit(MISSING)
        run = self.c.wait_run(self.c.start_run("missing"))
        t = self.tasks(run)["needs-it"]
        self.assertEqual(t["state"], "failed")
        self.assertIn("secret NOPE does not exist; `loom secrets set NOPE`", t["error"])
        self.assertEqual(t["attempts"], 1)  # not retried: retrying cannot help

    def test_secret_names_values_and_removal(self):
        p = self.c.cli("secrets", "set", "9bad", input="value\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("invalid secret name", p.stderr)
        p = self.c.cli("secrets", "set", "EMPTY", input="")
        self.assertNotEqual(p.returncode, 0)
        p = self.c.cli("secrets", "set", "A", "the-value")
        self.assertEqual(p.returncode, 2)
        self.assertIn("stdin", p.stderr)
        with self.assertRaises(ApiError) as e:
            self.c.request("PUT", "/api/v1/secrets/BIG", {"value": "v" * (64 * 1024 + 1)})
        self.assertEqual(e.exception.status, 400)
        self.set_secret("GONE", "soon-removed")
        self.c.cli("secrets", "rm", "GONE", check=0)
        self.assertEqual(self.c.get("/api/v1/secrets")["secrets"], [])
        p = self.c.cli("secrets", "rm", "GONE")
        self.assertEqual(p.returncode, 1)


class KeyFile(unittest.TestCase):
    def run_loomd(self, state, extra=()):
        return subprocess.run([LOOMD, "--state-dir", state, "--http", "127.0.0.1:0",
                               "--bind", "tcp://127.0.0.1:*"] + list(extra),
                              capture_output=True, text=True, timeout=30)

    def test_wrong_or_exposed_key_is_refused(self):
        c = Cluster()
        try:
            c.start_loomd()
            c.request("PUT", "/api/v1/secrets/S", {"value": "sealed-value-123"})
            c.stop_loomd()
            key = os.path.join(c.state, "secrets.key")
            # Exposed to the group: refused, with what to do.
            os.chmod(key, 0o640)
            p = self.run_loomd(c.state)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("chmod 600", p.stderr)
            # Another key: refused, naming the problem, no crash.
            os.chmod(key, 0o600)
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            p = self.run_loomd(c.state)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("does not decrypt the secrets stored", p.stderr)
            # A key kept elsewhere (--secrets-key): created there, 0600.
            other = os.path.join(c.tmp, "elsewhere.key")
            state2 = os.path.join(c.tmp, "state2")
            c2 = Cluster(tmp=c.tmp)
            c2.state = state2
            c2.start_loomd(extra=["--secrets-key", other])
            c2.request("PUT", "/api/v1/secrets/S", {"value": "sealed-value-456"})
            c2.stop_loomd()
            self.assertEqual(os.stat(other).st_mode & 0o777, 0o600)
            self.assertFalse(os.path.exists(os.path.join(state2, "secrets.key")))
        finally:
            if c.loomd:
                c.stop_loomd()
            c.close()


DEPLOY = """pipeline: on-deploy
triggers:
  - event: deploy
tasks:
  go: {run: echo deployed}
"""


def sign(secret, body, ts=None):
    msg = (str(ts).encode() + b"." + body) if ts is not None else body
    return "sha256=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


class Webhooks(ClusterTest):
    AGENTS = {"w1": 2}

    def runs(self):
        return self.c.get("/api/v1/runs?pipeline=on-deploy")["runs"]

    def post_raw(self, path, body, headers, token=""):
        # A webhook comes from outside: no bearer token unless one is given.
        return self.c.request("POST", path, body, headers=headers, token=token)

    def refused(self, path, body, headers, want):
        with self.assertRaises(ApiError) as e:
            self.post_raw(path, body, headers)
        self.assertEqual(e.exception.status, 401, e.exception.body)
        self.assertIn(want, e.exception.body)

    def test_signed_deliveries(self):
        self.c.submit(DEPLOY)
        p = self.c.cli("hooks", "secret", "set", "events.deploy", "--generate", check=0)
        secret = p.stdout.strip()
        self.assertEqual(len(secret), 64)
        lst = self.c.cli("hooks", "list", check=0)
        self.assertIn("events.deploy", lst.stdout)
        self.assertNotIn(secret, lst.stdout)
        self.assertNotIn(secret, self.c.get("/api/v1/hooks/secrets", raw=True).decode())

        body = json.dumps({"event_id": "d-1", "sha": "abc"}).encode()
        path = "/api/v1/events/deploy"
        # Present but wrong: refused even though the request may pass otherwise.
        self.refused(path, body, {"X-Loom-Signature": sign("wrong", body)},
                     "X-Loom-Signature does not match")
        self.refused(path, body, {"X-Loom-Signature": "sha256=zz"}, "64 hex digits")
        self.refused(path, body, {"X-Hub-Signature-256": sign("wrong", body)},
                     "X-Hub-Signature-256 does not match")
        # Stale, or signed without the timestamp it came with.
        old = int(time.time()) - 600
        self.refused(path, body, {"X-Loom-Signature": sign(secret, body, old),
                                  "X-Loom-Timestamp": str(old)}, "more than 300 seconds")
        now = int(time.time())
        self.refused(path, body, {"X-Loom-Signature": sign(secret, body),
                                  "X-Loom-Timestamp": str(now)}, "does not match")
        self.assertEqual(self.runs(), [])

        # Valid: body only, and with a fresh timestamp.
        r = self.post_raw(path, body, {"X-Loom-Signature": sign(secret, body, now),
                                       "X-Loom-Timestamp": str(now)})
        self.assertFalse(r["duplicate"])
        wait_for(lambda: len(self.runs()) == 1, "one run")
        # A replay of the same signed delivery starts nothing new.
        r = self.post_raw(path, body, {"X-Loom-Signature": sign(secret, body, now),
                                       "X-Loom-Timestamp": str(now)})
        self.assertTrue(r["duplicate"])
        # GitHub's header over another delivery.
        body2 = json.dumps({"event_id": "d-2"}).encode()
        r = self.post_raw(path, body2, {"X-Hub-Signature-256": sign(secret, body2)})
        self.assertFalse(r["duplicate"])
        wait_for(lambda: len(self.runs()) == 2, "two runs")
        r = self.post_raw(path, body2, {"X-Hub-Signature-256": sign(secret, body2)})
        self.assertTrue(r["duplicate"])
        self.assertEqual(len(self.runs()), 2)

        # Events without their own secret use `events`; a hook with no
        # secret cannot verify a signature.
        other = b'{"x": 1}'
        self.refused("/api/v1/events/other", other, {"X-Loom-Signature": sign("k", other)},
                     "has no secret")
        self.c.request("PUT", "/api/v1/hooks/secrets/events", {"value": "shared-events-key"})
        self.post_raw("/api/v1/events/other", other,
                      {"X-Loom-Signature": sign("shared-events-key", other)})
        # events.deploy keeps its own.
        self.refused(path, body, {"X-Loom-Signature": sign("shared-events-key", body)},
                     "hook events.deploy")

        # Unsigned: refused without a token (naming the header to send),
        # 403 with a token below operate, accepted with an operate token.
        unsigned = json.dumps({"event_id": "d-unsigned"}).encode()
        self.refused(path, unsigned, {}, "X-Loom-Signature")
        read = self.c.cli("tokens", "create", "--role", "read", check=0).stdout.strip()
        with self.assertRaises(ApiError) as e:
            self.post_raw(path, unsigned, {}, token=read)
        self.assertEqual(e.exception.status, 403, e.exception.body)
        operate = self.c.cli("tokens", "create", "--role", "operate", check=0).stdout.strip()
        before = len(self.runs())
        self.post_raw(path, unsigned, {}, token=operate)
        wait_for(lambda: len(self.runs()) == before + 1, "the operator's event to start a run")

        # Alertmanager and S3 hooks.
        self.c.request("PUT", "/api/v1/hooks/secrets/alertmanager", {"value": "am-key-1234"})
        am = json.dumps({"version": "4", "alerts": []}).encode()
        self.refused("/api/v1/hooks/alertmanager", am, {"X-Loom-Signature": sign("no", am)},
                     "hook alertmanager")
        self.post_raw("/api/v1/hooks/alertmanager", am,
                      {"X-Loom-Signature": sign("am-key-1234", am)})
        s3 = json.dumps({"Records": []}).encode()
        self.refused("/api/v1/hooks/s3", s3, {"X-Hub-Signature-256": sign("no", s3)},
                     "has no secret")

        # Removing a hook secret; an unknown hook name is refused.
        self.c.cli("hooks", "secret", "rm", "alertmanager", check=0)
        self.assertNotIn("alertmanager",
                         [h["name"] for h in self.c.get("/api/v1/hooks/secrets")["hooks"]])
        p = self.c.cli("hooks", "secret", "set", "nope", input="x" * 10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown hook", p.stderr)


if __name__ == "__main__":
    unittest.main()
