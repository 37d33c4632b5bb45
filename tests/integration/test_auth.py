"""API authentication: bearer tokens and their roles, the CLI's credentials,
TLS, and the HTTP limits against slow or greedy clients."""
import hashlib
import json
import os
import re
import socket
import sqlite3
import ssl
import stat
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from loomtest import CLI, LOOMD, SOURCE, ApiError, Cluster, ClusterTest, DEADLINE, wait_for

# Routes that run without a token: health, and webhooks (whose handlers
# accept a signature instead). A new route is refused without a token unless
# it is listed here.
OPEN_ROUTES = {("GET", "health"), ("POST", "events/*"), ("POST", "hooks/alertmanager"),
               ("POST", "hooks/s3")}
ROLE_OF = {"R": "read", "O": "operate", "A": "admin", "OPEN": None}


def route_table():
    """(method, pattern, role) for every route in scheduler/api.c's table."""
    with open(os.path.join(SOURCE, "scheduler", "api.c")) as f:
        src = f.read()
    table = src[src.index("} routes[] = {") + len("} routes[] = {"):]
    table = table[:table.index("};")]
    routes = []
    for entry in re.findall(r"\{([^{}]*)\}", table):
        fields = [f.strip() for f in entry.split(",") if f.strip()]
        if len(fields) != 4:
            raise AssertionError("route table entry without a role: {%s}" % entry.strip())
        routes.append((fields[0].strip('"'), fields[1].strip('"'), fields[3]))
    return routes


def blake2b_hex(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


class TokenTest(ClusterTest):
    AGENTS = {}

    def create(self, role, **kw):
        body = dict(role=role, **kw)
        return self.c.post("/api/v1/tokens", body)

    def status(self, method, path, token, body=None):
        try:
            self.c.request(method, path, body=body, token=token, raw=True)
            return 200
        except ApiError as e:
            return e.status

    def test_every_route_refuses_a_missing_or_bad_token(self):
        routes = route_table()
        self.assertGreater(len(routes), 20)
        revoked = self.create("admin")
        self.c.request("DELETE", "/api/v1/tokens/%d" % revoked["id"])
        expiring = self.create("admin", ttl_s=1)
        self.assertEqual(self.status("GET", "/api/v1/runs", expiring["token"]), 200)
        wait_for(lambda: self.status("GET", "/api/v1/runs", expiring["token"]) == 401,
                 "the token to expire", timeout=5)
        bad_secret = re.sub(r"_[0-9a-f]{64}$", "_" + "0" * 64, self.c.token)
        tokens = {"none": "", "garbage": "not-a-token", "wrong secret": bad_secret,
                  "unknown id": "loom_999999_" + "a" * 64, "revoked": revoked["token"],
                  "expired": expiring["token"]}
        for method, pattern, role in routes:
            path = "/api/v1/" + pattern.replace("*", "1")
            body = {} if method in ("POST", "PUT") else None
            if (method, pattern) in OPEN_ROUTES:
                self.assertEqual(role, "OPEN", "%s %s" % (method, pattern))
            else:
                self.assertNotEqual(role, "OPEN", "%s %s needs a role" % (method, pattern))
            for what, token in tokens.items():
                if pattern == "health" and what == "none":
                    continue
                got = self.status(method, path, token, body)
                allowed = (401, 403) if (method, pattern) in OPEN_ROUTES else (401,)
                self.assertIn(got, allowed, "%s %s with %s token: HTTP %d" % (
                    method, pattern, what, got))
        # The 401 says what to do, and never echoes the token.
        req = urllib.request.Request(self.c.url + "/api/v1/runs",
                                     headers={"Authorization": "Bearer " + bad_secret})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 401)
        self.assertTrue(e.exception.headers["WWW-Authenticate"].startswith("Bearer"))
        text = e.exception.read().decode()
        self.assertIn("not known", json.loads(text)["error"])
        self.assertNotIn(bad_secret, text)

    def test_each_route_needs_exactly_its_role(self):
        below = {"R": None, "O": "read", "A": "operate"}
        tokens = {r: self.create(r)["token"] for r in ("read", "operate", "admin")}
        for method, pattern, role in route_table():
            self.assertIn(role, ROLE_OF, "%s %s" % (method, pattern))
            if role == "OPEN":
                continue
            # Ids that exist nowhere: a handler that runs answers 4xx, harmlessly.
            path = "/api/v1/" + pattern.replace("*", "999999")
            body = {} if method in ("POST", "PUT") else None
            if below[role]:
                got = self.status(method, path, tokens[below[role]], body)
                self.assertEqual(got, 403, "%s %s with a %s token" % (method, pattern,
                                                                      below[role]))
            got = self.status(method, path, tokens[ROLE_OF[role]], body)
            self.assertNotIn(got, (401, 403), "%s %s with a %s token" % (method, pattern,
                                                                         ROLE_OF[role]))

    def test_health_needs_no_token(self):
        self.assertEqual(self.c.get("/api/v1/health", token="")["status"], "ok")

    def test_roles(self):
        read = self.create("read", name="dashboard")["token"]
        operate = self.create("operate", name="ci")["token"]
        dag = "pipeline: p\ntasks:\n  t: {run: 'true'}\n"
        # read: every GET, no write.
        self.assertEqual(self.c.get("/api/v1/runs", token=read)["runs"], [])
        with self.assertRaises(ApiError) as e:
            self.c.post("/api/v1/pipelines", {"source": dag}, token=read)
        self.assertEqual(e.exception.status, 403)
        self.assertIn("role operate", e.exception.body)
        # operate: submit and run, but no gc, tokens or agent operations.
        self.c.post("/api/v1/pipelines", {"source": dag}, token=operate)
        run = self.c.post("/api/v1/pipelines/p/runs", token=operate)["run"]
        self.c.post("/api/v1/runs/%d/cancel" % run["id"], token=operate)
        for path in ("/api/v1/gc", "/api/v1/tokens", "/api/v1/agents/a1/drain"):
            with self.assertRaises(ApiError) as e:
                self.c.post(path, {"role": "read"}, token=operate)
            self.assertEqual(e.exception.status, 403, path)
            self.assertIn("role admin", e.exception.body)
        with self.assertRaises(ApiError) as e:
            self.c.get("/api/v1/tokens", token=read)
        self.assertEqual(e.exception.status, 403)
        # admin: all of it.
        self.c.post("/api/v1/gc", {"keep_last": 5, "dry_run": True})
        self.assertEqual(len(self.c.get("/api/v1/tokens")["tokens"]), 3)

    def test_token_is_shown_once_and_stored_as_a_hash(self):
        p = self.c.cli("tokens", "create", "--role", "read", "--name", "ci", "--ttl", "1h",
                       check=0)
        token = p.stdout.strip()
        self.assertRegex(token, r"^loom_\d+_[0-9a-f]{64}$")
        self.assertIn("shown only this once", p.stderr)
        listed = self.c.cli("tokens", "list", check=0).stdout
        self.assertIn("ci", listed)
        self.assertIn("bootstrap", listed)
        secret = token.rsplit("_", 1)[1]
        as_json = self.c.cli("tokens", "list", "--json", check=0).stdout
        for out in (listed, as_json):
            self.assertNotIn(secret, out)
            self.assertNotIn(blake2b_hex(secret.encode()), out)
        self.assertEqual(self.c.get("/api/v1/runs", token=token)["runs"], [])
        db = sqlite3.connect(os.path.join(self.c.state, "loom.db"))
        try:
            rows = db.execute("SELECT * FROM tokens").fetchall()
            (stored,) = db.execute("SELECT hash FROM tokens WHERE id = ?",
                                   (int(token.split("_")[1]),)).fetchone()
        finally:
            db.close()
        self.assertEqual(stored.hex(), blake2b_hex(secret.encode()))
        for row in rows:
            for col in row:
                self.assertNotIn(secret, str(col))
        with open(os.path.join(self.c.tmp, "loomd.log")) as f:
            log = f.read()
        self.assertNotIn(secret, log)
        self.assertNotIn(self.c.token.rsplit("_", 1)[1], log)
        # Revoked: refused from the next request on; list says so.
        self.c.cli("tokens", "revoke", token.split("_")[1], check=0)
        with self.assertRaises(ApiError) as e:
            self.c.get("/api/v1/runs", token=token)
        self.assertEqual(e.exception.status, 401)
        self.assertIn("revoked", e.exception.body)
        self.assertIn("revoked", self.c.cli("tokens", "list", check=0).stdout)
        bad = self.c.cli("tokens", "create", "--role", "root")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("read, operate or admin", bad.stderr)
        agent = self.c.cli("tokens", "create", "--agent")
        self.assertEqual(agent.returncode, 2)
        self.assertIn("loom agents token", agent.stderr)

    def test_bootstrap_token_file(self):
        path = os.path.join(self.c.state, "admin.token")
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(path) as f:
            first = f.read()
        # A restart neither replaces it nor makes another.
        self.c.stop_loomd()
        self.c.start_loomd()
        with open(path) as f:
            self.assertEqual(f.read(), first)
        self.assertEqual(len(self.c.get("/api/v1/tokens")["tokens"]), 1)
        # Lost: loomd --new-admin-token writes another, beside the running loomd.
        new = os.path.join(self.c.tmp, "new.token")
        p = subprocess.run([LOOMD, "--state-dir", self.c.state, "--new-admin-token", new],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(new).st_mode), 0o600)
        with open(new) as f:
            token = f.read().strip()
        self.assertNotIn(token, p.stdout + p.stderr)
        self.assertEqual(len(self.c.get("/api/v1/tokens", token=token)["tokens"]), 2)
        again = subprocess.run([LOOMD, "--state-dir", self.c.state, "--new-admin-token", new],
                               capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(again.returncode, 1)
        self.assertIn("already exists", again.stderr)
        with open(new) as f:
            self.assertEqual(f.read().strip(), token)


class CliCredentialsTest(ClusterTest):
    AGENTS = {}

    def env(self, **kw):
        base = {"LOOM_SERVER": None, "LOOM_TOKEN": None, "LOOM_CONFIG": None,
                "LOOM_HOME": os.path.join(self.c.tmp, "nohome"),
                "XDG_CONFIG_HOME": os.path.join(self.c.tmp, "noxdg")}
        base.update(kw)
        return self.c.cli_env(**base)

    def config(self, text, mode=0o600):
        path = os.path.join(self.c.tmp, "config")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_precedence(self):
        read = self.c.post("/api/v1/tokens", {"role": "read"})["token"]
        cfg = self.config("# loom\nserver = %s\ntoken = %s\n" % (self.c.url, read))
        # The config file alone: server and a read token.
        p = self.c.cli("agents", env=self.env(LOOM_CONFIG=cfg), check=0)
        self.assertIn("no agents", p.stdout.lower() + p.stderr.lower())
        g = self.c.cli("gc", "--keep-last", "5", "--dry-run", env=self.env(LOOM_CONFIG=cfg), check=1)
        self.assertIn("role admin", g.stderr)
        self.assertIn(cfg, g.stderr)  # says where the token came from
        # $LOOM_TOKEN wins over the file.
        self.c.cli("gc", "--keep-last", "5", "--dry-run", env=self.env(LOOM_CONFIG=cfg, LOOM_TOKEN=self.c.token),
                   check=0)
        bad = self.c.cli("agents", env=self.env(LOOM_CONFIG=cfg, LOOM_TOKEN="loom_1_" + "0" * 64),
                         check=1)
        self.assertIn("$LOOM_TOKEN", bad.stderr)
        # The default place, $XDG_CONFIG_HOME/loom/config.
        xdg = os.path.join(self.c.tmp, "xdg")
        os.makedirs(os.path.join(xdg, "loom"))
        os.rename(cfg, os.path.join(xdg, "loom", "config"))
        self.c.cli("agents", env=self.env(XDG_CONFIG_HOME=xdg), check=0)
        # No token at all: a clear message.
        none = self.c.cli("agents", env=self.env(LOOM_SERVER=self.c.url), check=1)
        self.assertIn("no API token", none.stderr)
        self.assertIn("LOOM_TOKEN", none.stderr)

    def test_config_file_readable_by_others_is_refused(self):
        cfg = self.config("server = %s\ntoken = %s\n" % (self.c.url, self.c.token), mode=0o644)
        p = self.c.cli("agents", env=self.env(LOOM_CONFIG=cfg), check=2)
        self.assertIn("chmod 600", p.stderr)
        self.assertNotIn(self.c.token, p.stderr)
        typo = self.config("sever = %s\n" % self.c.url)
        p = self.c.cli("agents", env=self.env(LOOM_CONFIG=typo), check=2)
        self.assertIn("%s:1: unknown key" % typo, p.stderr)
        missing = self.c.cli("agents", env=self.env(LOOM_CONFIG=typo + ".nope"), check=2)
        self.assertIn("no such file", missing.stderr)

    def test_loom_home_admin_token_only_for_its_own_loomd(self):
        # The loomd of $LOOM_HOME: its admin.token is used.
        self.c.cli("gc", "--keep-last", "5", "--dry-run", env=self.env(LOOM_HOME=self.c.state), check=0)
        # Another server: the admin token is not sent there.
        got = []
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        url = "http://127.0.0.1:%d" % srv.getsockname()[1]
        p = subprocess.Popen([CLI, "agents"], env=self.env(LOOM_HOME=self.c.state,
                                                           LOOM_SERVER=url),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        srv.settimeout(DEADLINE)
        conn, _ = srv.accept()
        conn.settimeout(DEADLINE)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        got.append(data.decode())
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
        conn.close()
        srv.close()
        p.communicate(timeout=DEADLINE)
        self.assertNotIn("authorization", got[0].lower())


def make_cert(folder):
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class TlsTest(unittest.TestCase):
    def test_https_with_a_private_ca(self):
        c = Cluster()
        try:
            cert, key = make_cert(c.tmp)
            c.ssl_context = ssl.create_default_context(cafile=cert)
            c.start_loomd(["--tls-cert", cert, "--tls-key", key])
            self.assertTrue(c.url.startswith("https://127.0.0.1:"), c.url)
            self.assertEqual(c.get("/api/v1/runs")["runs"], [])
            # The CLI trusts the certificate through $LOOM_CA_CERT...
            c.cli("agents", env=c.cli_env(LOOM_CA_CERT=cert), check=0)
            # ...and only then: without it the connection is refused.
            p = c.cli("agents", env=c.cli_env(LOOM_CA_CERT=None))
            self.assertNotEqual(p.returncode, 0)
            self.assertRegex(p.stderr.lower(), r"certificate|ssl|tls")
            with self.assertRaises(urllib.error.URLError):
                urllib.request.urlopen(c.url + "/api/v1/health", timeout=DEADLINE)
            # Plain http to the https port gets no API answer.
            with self.assertRaises(Exception):
                urllib.request.urlopen(c.url.replace("https", "http") + "/api/v1/health",
                                       timeout=DEADLINE).read()
        finally:
            c.close()

    def test_bad_tls_flags(self):
        c = Cluster()
        try:
            p = subprocess.run([LOOMD, "--state-dir", c.state, "--tls-cert", "/nonexistent"],
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2)
            self.assertIn("go together", p.stderr)
            p = subprocess.run([LOOMD, "--state-dir", c.state, "--tls-cert", "/nonexistent",
                                "--tls-key", "/nonexistent"],
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2)
            self.assertIn("--tls-cert /nonexistent: no such file", p.stderr)
        finally:
            c.close()


class HardeningTest(ClusterTest):
    AGENTS = {"a1": 1}

    def setUp(self):
        self.c = Cluster()
        self.c.start_loomd(["--http-timeout", "1s", "--http-max-per-ip", "6"])
        self.c.start_agent("a1", 1)
        self.c.wait_agents(["a1"])

    def connect(self):
        host, port = self.c.url.rsplit("/", 1)[1].split(":")
        s = socket.create_connection((host, int(port)), timeout=DEADLINE)
        return s

    def test_slow_headers_are_cut_off(self):
        s = self.connect()
        start = time.monotonic()
        request = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
        closed = False
        try:
            for byte in request:  # one byte every 50 ms: never silent for 1 s
                s.sendall(bytes([byte]))
                s.settimeout(0.05)
                try:
                    if s.recv(4096) == b"":
                        closed = True
                        break
                except socket.timeout:
                    pass
                if time.monotonic() - start > 10:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        finally:
            s.close()
        self.assertTrue(closed, "a slow client was not cut off")
        self.assertLess(time.monotonic() - start, 4)
        self.assertEqual(self.c.get("/api/v1/health")["status"], "ok")

    def test_oversized_header_is_refused(self):
        s = self.connect()
        try:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 +
                      b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(DEADLINE)
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
        s.close()
        self.assertFalse(answer.startswith(b"HTTP/1.1 200"), answer[:100])
        if answer:
            self.assertRegex(answer, rb"^HTTP/1\.[01] 431")

    def test_connections_per_address_are_limited(self):
        held = [self.connect() for _ in range(6)]
        try:
            extra = self.connect()
            extra.settimeout(DEADLINE)
            try:
                extra.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = extra.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
            extra.close()
            self.assertEqual(answer, b"")
        finally:
            for s in held:
                s.close()
        # Once they are gone, requests are served again.
        wait_for(lambda: self._health_ok(), "the limit to free up", timeout=10)

    def _health_ok(self):
        try:
            return self.c.get("/api/v1/health", timeout=2)["status"] == "ok"
        except (OSError, ApiError):
            return False

    def test_long_polls_and_large_bodies_still_work(self):
        go = os.path.join(self.c.tmp, "go")
        self.c.submit("pipeline: w\ntasks:\n  t:\n    run: while [ ! -e %s ]; do sleep 0.02; "
                      "done; echo done\n" % go)
        run_id = self.c.start_run("w")
        start = time.monotonic()
        run = self.c.get("/api/v1/runs/%d?wait=3" % run_id)  # 3 s > the 1 s timeout
        self.assertGreaterEqual(time.monotonic() - start, 2.9)
        self.assertIn(run["state"], ("queued", "running"))
        # A followed log idles longer than the timeout, then gets its line.
        url = self.c.url + "/api/v1/runs/%d/tasks/t/log?follow=1" % run_id
        req = urllib.request.Request(url, headers=self.c.auth())
        with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
            t0 = time.monotonic()
            wait_for(lambda: time.monotonic() - t0 > 2, "two seconds", timeout=5, step=0.1)
            open(go, "w").close()
            self.assertEqual(resp.read(), b"done\n")
        # A 5 MiB object upload, far over the per-connection memory.
        data = os.urandom(5 << 20)
        out = self.c.request("PUT", "/api/v1/objects/" + blake2b_hex(data), body=data)
        self.assertEqual(out["size"], len(data))


if __name__ == "__main__":
    unittest.main()
