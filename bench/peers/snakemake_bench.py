#!/usr/bin/python3
"""Snakemake on this machine: `snakemake --cores N` (its local executor,
the same two slots loom's agent gets) on generated Snakefiles, timed from
the command's start to its exit, so Snakemake's own start-up and DAG
building are included as a user sees them. Each job writes an empty output
file, as Snakemake needs outputs to chain jobs. --nolock and --quiet skip
the working-folder lock and the progress output.

usage: snakemake_bench.py --stamp PATH --tmp DIR [--tasks N] [--chain N] [--repeat N]
"""
import os
import shutil
import subprocess
import time

from common import emit, hops_ms, peer_args

W1 = """\
rule all:
    input: expand("w1/{{i}}", i=range({n}))

rule t:
    output: "w1/{{i}}"
    shell: "true && touch {{output}}"
"""

W2 = """\
rule all:
    input: "w2/{last}"

def prev(wc):
    i = int(wc.i)
    return ["w2/%d" % (i - 1)] if i else []

rule c:
    input: prev
    output: "w2/{{i}}"
    shell: "{stamp} {trace} c{{wildcards.i}} && touch {{output}}"
"""


def snakemake(workdir, snakefile, cores):
    subprocess.run(["snakemake", "--snakefile", snakefile, "--directory", workdir,
                    "--cores", str(cores), "--nolock", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    args = peer_args()
    version = subprocess.run(["snakemake", "--version"], capture_output=True,
                             text=True).stdout.strip()
    out = {"system": "snakemake", "version": version, "w1": [], "w2": []}
    for r in range(args.repeat):
        work = os.path.join(args.tmp, "snakemake-%d" % r)
        os.makedirs(work)
        f1 = os.path.join(work, "W1.smk")
        with open(f1, "w") as f:
            f.write(W1.format(n=args.tasks))
        t0 = time.monotonic()
        snakemake(work, f1, args.workers)
        out["w1"].append(args.tasks / (time.monotonic() - t0))
        trace = os.path.join(work, "chain.trace")
        f2 = os.path.join(work, "W2.smk")
        with open(f2, "w") as f:
            f.write(W2.format(last=args.chain - 1, stamp=args.stamp, trace=trace))
        snakemake(work, f2, args.workers)
        out["w2"].append(hops_ms(trace))
        shutil.rmtree(work, ignore_errors=True)
    emit(out)


if __name__ == "__main__":
    main()
