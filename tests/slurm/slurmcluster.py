"""A one-node Slurm cluster for loom's tests and benchmark: a private munged,
slurmctld and slurmd, run as root on loopback, with their state, sockets and
logs in one folder and their ports chosen free at start.

    c = SlurmCluster(folder); c.start()   # raises SlurmError saying why not
    ... c.env is the environment for sbatch/squeue (SLURM_CONF) ...
    c.stop()                               # stops every daemon it started

Command line (for the benchmark and by hand):
    python3 slurmcluster.py start FOLDER   # prints export SLURM_CONF=...
    python3 slurmcluster.py stop FOLDER
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        return "\n".join("    " + l for l in lines[-n:]) or "    (empty)"
    except OSError as e:
        return "    (no log: %s)" % e


class SlurmCluster:
    def __init__(self, folder, cpus=None, memory_mb=None):
        self.dir = os.path.abspath(folder)
        self.cpus = cpus or os.cpu_count() or 2
        self.memory_mb = memory_mb or 1024
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs = {}

    # -- checks ----------------------------------------------------------
    def missing(self):
        """Why this machine cannot run the cluster, or None."""
        if os.geteuid() != 0:
            return "the test cluster runs its daemons as root (SlurmUser=root); run as root"
        need = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]
        lost = [p for p in need if not shutil.which(p)]
        if lost:
            return ("not installed: %s (scripts/install-deps.sh installs slurm-wlm and munge)"
                    % ", ".join(lost))
        if not os.path.exists("/etc/munge/munge.key"):
            return "/etc/munge/munge.key is missing (the munge package creates it)"
        return None

    # -- start and stop --------------------------------------------------
    def start(self, timeout=60):
        why = self.missing()
        if why:
            raise SlurmError("Slurm test cluster cannot start: " + why)
        for sub in ("ctld", "spool", "munge"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o700, exist_ok=True)
        key = os.path.join(self.dir, "munge", "munge.key")
        shutil.copyfile("/etc/munge/munge.key", key)
        os.chmod(key, 0o600)
        self.socket = os.path.join(self.dir, "munge", "munge.socket")
        values = {"DIR": self.dir, "CTLD_PORT": free_port(), "SLURMD_PORT": free_port(),
                  "MUNGE_SOCKET": self.socket, "CPUS": self.cpus, "MEMORY_MB": self.memory_mb}
        with open(os.path.join(HERE, "slurm.conf.in")) as f:
            text = f.read()
        for k, v in values.items():
            text = text.replace("@%s@" % k, str(v))
        with open(self.conf, "w") as f:
            f.write(text)
        try:
            self._spawn("munged", ["munged", "-F", "--force", "--socket", self.socket,
                                   "--key-file", key,
                                   "--pid-file", os.path.join(self.dir, "munge", "munged.pid"),
                                   "--seed-file", os.path.join(self.dir, "munge", "seed"),
                                   "--log-file", os.path.join(self.dir, "munged.log")])
            self._wait(lambda: os.path.exists(self.socket), "munged's socket", timeout)
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf])
            self._wait(self._ctld_up, "slurmctld to answer", timeout)
            self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", self.conf])
            self._wait(self._node_idle, "the node to be idle in sinfo", timeout)
        except SlurmError:
            self.stop()
            raise
        return self

    def _spawn(self, name, argv):
        log = open(os.path.join(self.dir, name + ".out"), "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        log.close()

    def _run(self, argv):
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=10)

    def _ctld_up(self):
        return self._run(["scontrol", "ping"]).stdout.find("UP") >= 0

    def _node_idle(self):
        out = self._run(["sinfo", "-h", "-o", "%t"]).stdout.split()
        return out and all(s in ("idle", "mix", "alloc") for s in out)

    def _wait(self, cond, what, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmError(self.why("%s exited with status %d while waiting for %s"
                                              % (name, p.returncode, what)))
            try:
                if cond():
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.1)
        raise SlurmError(self.why("timed out after %ds waiting for %s" % (timeout, what)))

    def why(self, head):
        parts = ["Slurm test cluster did not come up: " + head, "configuration: " + self.conf]
        for name in DAEMONS:
            for suffix in (".log", ".out"):
                path = os.path.join(self.dir, name + suffix)
                if os.path.exists(path):
                    parts.append("last lines of %s:\n%s" % (path, tail(path)))
        return "\n".join(parts)

    def stop(self):
        for name in reversed(DAEMONS):
            p = self.procs.pop(name, None)
            if not p or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        sys.exit("usage: slurmcluster.py start|stop FOLDER")
    folder = os.path.abspath(argv[2])
    if argv[1] == "start":
        c = SlurmCluster(folder)
        try:
            c.start()
        except SlurmError as e:
            sys.exit(str(e))
        with open(os.path.join(folder, "pids"), "w") as f:
            f.write(" ".join(str(p.pid) for p in c.procs.values()))
        print("export SLURM_CONF=%s" % c.conf)
    else:
        try:
            pids = [int(x) for x in open(os.path.join(folder, "pids")).read().split()]
        except OSError:
            sys.exit("no cluster started in %s" % folder)
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main(sys.argv)
