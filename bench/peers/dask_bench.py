#!/usr/bin/python3
"""Dask distributed on this machine: a LocalCluster on 127.0.0.1 with one
worker process per core, one thread each (the same two slots loom's agent
gets), nanny on, dashboard off. Throughput is measured as Dask's
documentation recommends for many small tasks: one `client.map` call
(pure=False, so every call runs) and one `client.gather`, rather than a
submit-and-wait per task. The chain passes each future to the next submit,
so the scheduler, not the client, releases each task.

usage: dask_bench.py --stamp PATH --tmp DIR [--tasks N] [--chain N] [--repeat N]
"""
import os
import subprocess
import time

from common import emit, hops_ms, peer_args


def run_true(_i):
    subprocess.run(["true"], check=True)


def run_stamp(stamp, trace, name, _prev):
    subprocess.run([stamp, trace, name], check=True)
    return name


def main():
    args = peer_args()
    import dask
    from distributed import Client, LocalCluster
    import distributed

    dask.config.set({"distributed.worker.daemon": False})
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=40,
                           local_directory=args.tmp)
    client = Client(cluster)
    out = {"system": "dask", "version": distributed.__version__, "w1": [], "w2": []}
    try:
        client.gather(client.map(run_true, range(10), pure=False))  # warm the workers
        for r in range(args.repeat):
            t0 = time.monotonic()
            client.gather(client.map(run_true, range(args.tasks), pure=False))
            out["w1"].append(args.tasks / (time.monotonic() - t0))
            trace = os.path.join(args.tmp, "dask-chain-%d-%d.trace" % (os.getpid(), r))
            prev = None
            for i in range(args.chain):
                prev = client.submit(run_stamp, args.stamp, trace, "c%04d" % i, prev, pure=False)
            prev.result()
            out["w2"].append(hops_ms(trace))
    finally:
        client.close()
        cluster.close()
    emit(out)


if __name__ == "__main__":
    main()
