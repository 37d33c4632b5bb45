"""Harness for loom's integration tests: real loomd and loom-agent processes
on 127.0.0.1, on ports the OS picks, in a temporary folder.

Waiting is always for a condition with a deadline (a long poll, a file that
appears, a line that arrives) -- never a fixed sleep.
"""
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

BUILD = os.environ.get("LOOM_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "debug")
SOURCE = os.environ.get("LOOM_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
LOOMD = os.path.join(BUILD, "loomd")
AGENT = os.path.join(BUILD, "loom-agent")
CLI = os.path.join(BUILD, "loom")

DEADLINE = 30.0  # seconds any single wait may take before the test fails


def wait_for(cond, what, timeout=DEADLINE, step=0.01):
    """Polls cond() until it returns a truthy value; fails after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(step)


def failure_of(test):
    """The traceback text of test's failure or error so far, or None.
    unittest records it on the result before tearDown; outcome.success is
    only updated afterwards."""
    result = getattr(getattr(test, "_outcome", None), "result", None)
    for t, text in (result.errors + result.failures) if result is not None else []:
        if t is test:
            return text
    return None


def print_failure_last(test):
    """Repeats the failure's last line after the logs a failing test prints,
    so that the tail of a long CI log still says what failed."""
    text = failure_of(test)
    if text:
        print("%s FAILED: %s" % (test.id(), text.strip().splitlines()[-1]))


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body))
        self.status = status
        self.body = body


class Cluster:
    """loomd plus agents in one temporary folder."""

    def __init__(self, tmp=None, heartbeat="100ms", agent_timeout="3s", log_level="debug"):
        self.log_level = log_level
        self.tmp = tmp or tempfile.mkdtemp(prefix="loomtest-")
        self.state = os.path.join(self.tmp, "state")
        self.heartbeat = heartbeat
        self.agent_timeout = agent_timeout
        self.loomd = None
        self.agents = {}
        self.url = None
        self.zmq = None
        self.token = None  # the admin token loomd wrote on its first start
        self.ssl_context = None  # for https: trusts the test's certificate

    # -- processes --------------------------------------------------------
    def start_loomd(self, extra=()):
        # A restart reuses the agents' endpoint the OS picked the first time,
        # so running agents find the new loomd where the old one was.
        bind = self.zmq or "tcp://127.0.0.1:*"
        addr = os.path.join(self.state, "loomd.json")
        if os.path.exists(addr):
            os.unlink(addr)
        log = open(os.path.join(self.tmp, "loomd.log"), "ab")
        self.loomd = subprocess.Popen(
            [LOOMD, "--state-dir", self.state, "--http", "127.0.0.1:0",
             "--bind", bind, "--heartbeat", self.heartbeat,
             "--agent-timeout", self.agent_timeout, "--log-level", self.log_level]
            + list(extra),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def ready():
            if self.loomd.poll() is not None:
                raise AssertionError("loomd exited with %s; see %s" % (
                    self.loomd.returncode, os.path.join(self.tmp, "loomd.log")))
            try:
                with open(addr) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                return None
            return info if info.get("pid") == self.loomd.pid else None
        info = wait_for(ready, "loomd to listen")
        self.url = info["http"]
        self.zmq = info["zmq"]
        with open(os.path.join(self.state, "admin.token")) as f:
            self.token = f.read().strip()
        return self

    def stop_loomd(self, sig=signal.SIGTERM):
        self.loomd.send_signal(sig)
        rc = self.loomd.wait(timeout=DEADLINE)
        self.loomd = None
        return rc

    def start_agent(self, name, slots=2, extra=(), env=None, join=True):
        work = os.path.join(self.tmp, "agent-" + name)
        if join and not os.path.exists(os.path.join(work, "curve", "server.pub")):
            # CURVE: a first start joins with a one-time token, given in the
            # environment as `loom up` does; later starts use the stored keys.
            token = self.post("/api/v1/agents/tokens", {"name": name})["token"]
            env = dict(os.environ if env is None else env, LOOM_JOIN_TOKEN=token)
        log = open(os.path.join(self.tmp, "agent-%s.log" % name), "ab")
        if "--run-as" not in extra:
            # Tasks run as whoever runs the tests (as root in CI: an explicit
            # choice the agent requires); test_task_user.py covers --run-as.
            extra = ["--run-as", pwd.getpwuid(os.geteuid()).pw_name] + list(extra)
        p = subprocess.Popen(
            [AGENT, "--server", self.zmq, "--name", name, "--work-dir", work,
             "--slots", str(slots), "--log-level", self.log_level] + list(extra),
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.agents[name] = p
        return p

    def wait_agents(self, names):
        def connected():
            got = {a["name"]: a["state"] for a in self.get("/api/v1/agents")["agents"]}
            return all(got.get(n) == "connected" for n in names)
        wait_for(connected, "agents %s to connect" % names)

    def stop_agent(self, name, sig=signal.SIGTERM):
        p = self.agents.pop(name)
        p.send_signal(sig)
        return p.wait(timeout=DEADLINE)

    def close(self, keep=False):
        for name in list(self.agents):
            p = self.agents[name]
            try:
                self.stop_agent(name)
            except Exception:
                # Still draining (it waits for loomd to take its results):
                # a test must not leave it running.
                self.agents.pop(name, None)
                p.kill()
                p.wait()
        if self.loomd:
            rc = self.stop_loomd()
            if rc != 0:
                raise AssertionError("loomd exited with %d on SIGTERM" % rc)
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def logs(self):
        out = []
        for f in sorted(os.listdir(self.tmp)):
            if f.endswith(".log"):
                with open(os.path.join(self.tmp, f), errors="replace") as fh:
                    out.append("==> %s <==\n%s" % (f, fh.read()[-6000:]))
        return "\n".join(out)

    # -- HTTP ----------------------------------------------------------------
    def auth(self, token=None):
        """The Authorization header for token (default: the admin token)."""
        return {"Authorization": "Bearer " + (token or self.token)}

    def request(self, method, path, body=None, raw=False, timeout=DEADLINE + 5, headers=None,
                token=None):
        """An API call with the admin token, or token; token="" sends none."""
        data = None
        headers = dict(headers or {})
        if token != "" and "Authorization" not in headers:
            headers.update(self.auth(token))
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as resp:
                payload = resp.read()
                return payload if raw else json.loads(payload)
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace"))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)

    def submit(self, source, file="dag.yaml"):
        return self.post("/api/v1/pipelines", {"file": file, "source": source})

    def start_run(self, pipeline):
        return self.post("/api/v1/pipelines/%s/runs" % pipeline)["run"]["id"]

    def wait_run(self, run_id):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            run = self.get("/api/v1/runs/%d?wait=10" % run_id)
            if run["state"] not in ("queued", "running"):
                return run
        raise AssertionError("run %d did not end" % run_id)

    def log(self, run_id, task, **params):
        q = "&".join("%s=%s" % kv for kv in params.items())
        return self.get("/api/v1/runs/%d/tasks/%s/log%s" % (run_id, task, "?" + q if q else ""),
                        raw=True)

    def cli_env(self, **extra):
        """The environment for a loom command talking to this loomd as admin."""
        env = dict(os.environ, LOOM_SERVER=self.url, LOOM_TOKEN=self.token)
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def cli(self, *args, check=None, input=None, env=None):
        env = env if env is not None else self.cli_env()
        p = subprocess.run([CLI] + list(args), capture_output=True, text=True, env=env,
                           timeout=DEADLINE + 30, input=input)
        if check is not None and p.returncode != check:
            raise AssertionError("loom %s exited %d (wanted %d)\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(args), p.returncode, check, p.stdout, p.stderr))
        return p


class ClusterTest(unittest.TestCase):
    """A test case with a fresh cluster per test; on failure the daemons'
    logs are printed."""
    AGENTS = {"a1": 2, "a2": 2}

    def setUp(self):
        self.c = Cluster()
        self.c.start_loomd()
        for name, slots in self.AGENTS.items():
            self.c.start_agent(name, slots)
        self.c.wait_agents(list(self.AGENTS))

    def tearDown(self):
        if self._failed():
            print(self.c.logs())
            print_failure_last(self)
        self.c.close()

    def _failed(self):
        return failure_of(self) is not None

    def tasks(self, run):
        return {t["name"]: t for t in run["tasks"]}
