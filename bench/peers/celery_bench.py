#!/usr/bin/python3
"""Celery with a Redis broker on this machine: a private redis-server on a
free port of 127.0.0.1 (no persistence, its own folder) and one worker with
the prefork pool and one child per core (the same two slots loom's agent
gets), gossip, mingle and heartbeats off. W1 sends the tasks as one group;
W2 is a Celery chain of immutable signatures, so the worker sends each
next task as the previous one ends. Both daemons are stopped on the way out.

usage: celery_bench.py --stamp PATH --tmp DIR [--tasks N] [--chain N] [--repeat N]
"""
import os
import signal
import socket
import subprocess
import sys
import time

from common import emit, hops_ms, peer_args, wait_lines

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port



def stop(p, sig=signal.SIGTERM):
    if p and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_redis(tmp):
    for _ in range(5):
        port = free_port()
        rdir = os.path.join(tmp, "redis")
        os.makedirs(rdir, exist_ok=True)
        p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                              "--dir", rdir, "--save", "", "--appendonly", "no",
                              "--protected-mode", "yes", "--daemonize", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return p, port
            except OSError:
                time.sleep(0.02)
        stop(p)
    raise SystemExit("celery_bench: redis-server did not start")


def main():
    args = peer_args()
    redis, worker = None, None
    try:
        redis, port = start_redis(args.tmp)
        os.environ["BENCH_REDIS_URL"] = "redis://127.0.0.1:%d/0" % port
        sys.path.insert(0, HERE)
        import celery
        from celery import chain, group
        from celery_app import app, run_stamp, run_true
        log = open(os.path.join(args.tmp, "celery-worker.log"), "ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
             "--concurrency", str(args.workers), "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel", "WARNING"],
            cwd=HERE, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        log.close()
        end = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > end:
                raise SystemExit("celery_bench: the worker did not start; see %s" % log.name)
        out = {"system": "celery", "version": celery.__version__, "w1": [], "w2": []}
        warm = os.path.join(args.tmp, "celery-warm")
        group(run_true.si(warm) for _ in range(10)).apply_async()
        wait_lines(warm, 10, 60, "celery_bench")
        for r in range(args.repeat):
            done = os.path.join(args.tmp, "celery-w1-%d" % r)
            t0 = time.monotonic()
            group(run_true.si(done) for _ in range(args.tasks)).apply_async()
            wait_lines(done, args.tasks, 600, "celery_bench")
            out["w1"].append(args.tasks / (time.monotonic() - t0))
            trace = os.path.join(args.tmp, "celery-chain-%d.trace" % r)
            chain(*[run_stamp.si(args.stamp, trace, "c%04d" % i)
                    for i in range(args.chain)]).apply_async()
            wait_lines(trace, args.chain, 600, "celery_bench")
            out["w2"].append(hops_ms(trace))
        emit(out)
    finally:
        stop(worker)  # warm shutdown: the worker finishes and exits
        stop(redis)


if __name__ == "__main__":
    main()
