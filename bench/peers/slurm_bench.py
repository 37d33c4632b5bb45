#!/usr/bin/python3
"""Slurm on this machine. bench/compare.py starts the one-node cluster of
tests/slurm/ (munged, slurmctld, slurmd as root on loopback), runs this
script with SLURM_CONF pointing at it, and stops the daemons afterwards;
see bench/slurm/README.md. Run by hand, it needs such a cluster already up,
reachable through sbatch on PATH and $SLURM_CONF.

W1 is one job array of N tasks (`sbatch --array=0-(N-1) --wrap true`), the
way Slurm's High Throughput Computing guide recommends submitting many
small jobs; each array task appends a line to a file, and the time is
submit → last line. W2 is a chain of jobs, each submitted with
`--dependency=afterok:PREVIOUS`, each running loom-bench-stamp.

usage: slurm_bench.py --stamp PATH --tmp DIR [--tasks N] [--chain N] [--repeat N]
"""
import os
import subprocess
import time

from common import emit, hops_ms, peer_args, wait_lines


def sbatch(*args):
    return subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "--error=/dev/null"]
                          + list(args), check=True, capture_output=True,
                          text=True).stdout.strip().split(";")[0]



def main():
    args = peer_args()
    version = subprocess.run(["sbatch", "--version"], capture_output=True,
                             text=True).stdout.strip()
    out = {"system": "slurm", "version": version, "w1": [], "w2": []}
    for r in range(args.repeat):
        done = os.path.join(args.tmp, "slurm-w1-%d" % r)
        t0 = time.monotonic()
        sbatch("--array=0-%d" % (args.tasks - 1), "--wrap", "true && echo x >> %s" % done)
        wait_lines(done, args.tasks, 3600, "slurm_bench", step=0.01)
        out["w1"].append(args.tasks / (time.monotonic() - t0))
        trace = os.path.join(args.tmp, "slurm-chain-%d.trace" % r)
        prev = None
        for i in range(args.chain):
            dep = ["--dependency=afterok:%s" % prev, "--kill-on-invalid-dep=yes"] if prev else []
            prev = sbatch(*dep, "--wrap", "%s %s c%04d" % (args.stamp, trace, i))
        wait_lines(trace, args.chain, 3600, "slurm_bench", step=0.01)
        out["w2"].append(hops_ms(trace))
    emit(out)


if __name__ == "__main__":
    main()
