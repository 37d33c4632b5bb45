"""What the Python benchmarks share: the machine line their tables start
with, a percentile, and /proc readings of a process."""
import os
import platform


def machine(build, detail):
    """ "Machine: CPU, N cores, Linux X; loom release build; DETAIL." """
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return "Machine: %s, %d cores, Linux %s; loom %s build; %s.\n" % (
        cpu, os.cpu_count(), platform.release(), os.path.basename(build), detail)


def pct(xs, p):
    """The p-th percentile, nearest rank on the sorted values."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def proc_status_kib(pid, field):
    """A kB figure of /proc/PID/status (VmRSS, VmHWM...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
